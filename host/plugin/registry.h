#pragma once
// Loads NF plugins (*.so) from a directory and keeps the valid ones by name.
//
// Each refusal is one log line naming the file and the reason, and never stops
// the other plugins from loading.
//
// The file is decided on before any of its code runs: it must be a regular
// file (no symlink), owned by root or this host's user, writable by neither
// group nor others, in a directory (its own and the plugin directory) owned
// the same way and not writable by group or others.
// It is then copied into a sealed memfd, and the copy, not the file, is
// checked (ELF shared object for this machine, exporting the entry function)
// and dlopened.  So a refused file never has its ELF constructors run, and
// overwriting the file on disk never touches the code a running host uses.
// Only the descriptor checks need the entry function, hence dlopen, first.

#include <serpens/nf.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace serpens {

enum class RefusalReason {
    not_shared_object,
    insecure_permissions,
    dlopen_failed,
    missing_entry,
    null_descriptor,
    abi_major_mismatch,
    descriptor_too_small,
    invalid_descriptor,
    duplicate_name,
    not_regular_file,   // a symlink, directory, FIFO or device
    unreadable,         // cannot be opened, read or copied
    too_large,          // larger than max_plugin_bytes
    foreign_owner,      // owned by neither root nor this host's user
    insecure_directory, // its directory is writable by group or others, or foreign-owned
    wrong_machine,      // an ELF for another class, byte order or machine
    host_too_old,       // min_host_minor above this host's SERPENS_ABI_MINOR
};

// No plugin is anywhere near this; it bounds the private in-memory copy.
inline constexpr std::size_t max_plugin_bytes = std::size_t{256} << 20;

const char *to_string(RefusalReason reason) noexcept;

struct PluginRefusal {
    std::string path;
    RefusalReason reason;
    std::string message; // the full, operator-readable line
};

class Plugin {
public:
    // Owns `handle` and `image_fd`, the sealed private copy `handle` was
    // loaded from; the fd stays open while the object is mapped, so its
    // /proc/self/fd name can never be handed to another plugin.  `digest`
    // identifies the image's bytes (0 for a built-in).
    Plugin(std::string path, void *handle, const serpens_nf_descriptor *desc, int image_fd, uint64_t digest = 0);
    ~Plugin();
    Plugin(const Plugin &) = delete;
    Plugin &operator=(const Plugin &) = delete;

    const std::string &path() const noexcept { return _path; }
    const serpens_nf_descriptor &descriptor() const noexcept { return *_desc; }
    std::string name() const { return _desc->name; }
    // A hash of the loaded image's bytes: tells a rebuilt file from the same one.
    uint64_t digest() const noexcept { return _digest; }
    // The address of an exported symbol of this plugin, or nullptr.  The
    // object is loaded from a private copy, so dlopen(path()) would not find it.
    void *symbol(const char *name) const noexcept;

private:
    std::string _path; // the file on disk, for messages; the code comes from _image_fd
    void *_handle;
    const serpens_nf_descriptor *_desc;
    int _image_fd;
    uint64_t _digest;
};

class PluginRegistry {
public:
    PluginRegistry() = default;
    // A registry for a reload: a file whose bytes are those `previous` loaded
    // from the same path is not loaded again; both registries share that
    // Plugin (`previous` must outlive the loads).
    explicit PluginRegistry(const PluginRegistry *previous) : _previous(previous) {}

    // Loads every *.so in `directory` and in its immediate subdirectories.
    // When two files declare one NF name, both are refused, each refusal
    // naming every claimant: no file wins by sorting first.  Refuses every
    // plugin when `directory` is writable by group or others.  Throws Error
    // when the directory itself cannot be read; individual plugins are
    // refused, not thrown.
    void load_directory(const std::string &directory);
    // Loads one file; returns false (and records the refusal) when refused,
    // including when its NF name is already loaded.
    bool load_file(const std::string &path);
    // Registers a descriptor that lives in this process (built-in NFs, the
    // chain fuzzer), checked as a loaded one is; `origin` stands for the path
    // in messages.  Returns false (and records the refusal) when refused.
    bool add_builtin(const serpens_nf_descriptor &desc, const std::string &origin);

    const Plugin *find(const std::string &name) const;
    // The same, sharing ownership: keeps the plugin loaded for as long as the
    // caller holds it.
    std::shared_ptr<const Plugin> share(const std::string &name) const;
    const std::vector<PluginRefusal> &refusals() const noexcept { return _refusals; }
    std::vector<std::string> names() const;
    std::size_t size() const noexcept { return _plugins.size(); }

private:
    void refuse(const std::string &path, RefusalReason reason, const std::string &why);
    // Why `name` cannot be loaded again ("NF 'x' is already loaded from ..."), or "".
    std::string already_loaded(const std::string &name) const;
    // Checks, copies and dlopens one file; nullptr (refusal recorded) when refused.
    std::shared_ptr<Plugin> open_plugin(const std::string &path);
    bool admit(std::shared_ptr<Plugin> plugin);
    // The plugin `_previous` loaded from `path` when its digest is `digest`.
    std::shared_ptr<Plugin> unchanged(const std::string &path, uint64_t digest) const;

    std::map<std::string, std::shared_ptr<Plugin>> _plugins;
    std::vector<PluginRefusal> _refusals;
    const PluginRegistry *_previous = nullptr;
};

// Checks a descriptor against this host's ABI; returns an empty string when
// valid, else the reason.  Exposed for tests and for `serpens-host --check`.
std::string validate_descriptor(const serpens_nf_descriptor &desc, RefusalReason &reason);

// Whether a descriptor has the fields ABI 1.5 appended (flow state).
inline bool has_descriptor_1_5(const serpens_nf_descriptor &desc) noexcept
{
    return desc.struct_size >= offsetof(serpens_nf_descriptor, flow_expired) + sizeof desc.flow_expired;
}
// Whether a descriptor has the fields ABI 1.6 appended (flow visits).
inline bool has_descriptor_1_6(const serpens_nf_descriptor &desc) noexcept
{
    return desc.struct_size >= offsetof(serpens_nf_descriptor, reserved4) + sizeof desc.reserved4;
}
// Bytes of the chain's flow entry the NF wants (0: none, or a pre-1.5 NF).
inline uint32_t flow_state_size(const serpens_nf_descriptor &desc) noexcept
{
    return has_descriptor_1_5(desc) ? desc.flow_state_size : 0;
}
// How often the NF's flow_visit hook sees every entry (0: expiring ones only, or a pre-1.6 NF).
inline uint32_t flow_visit_ms(const serpens_nf_descriptor &desc) noexcept
{
    return has_descriptor_1_6(desc) ? desc.flow_visit_ms : 0;
}

} // namespace serpens
