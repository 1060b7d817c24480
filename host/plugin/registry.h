#pragma once
// Loads NF plugins (*.so) from a directory and keeps the valid ones by name.
//
// Each refusal is one log line naming the file and the reason, and never stops
// the other plugins from loading.  A plugin is refused before any of its code
// other than the entry function runs (its ELF constructors aside, which dlopen
// runs and no loader can avoid).

#include <serpens/nf.h>

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
};

const char *to_string(RefusalReason reason) noexcept;

struct PluginRefusal {
    std::string path;
    RefusalReason reason;
    std::string message; // the full, operator-readable line
};

class Plugin {
public:
    Plugin(std::string path, void *handle, const serpens_nf_descriptor *desc);
    ~Plugin();
    Plugin(const Plugin &) = delete;
    Plugin &operator=(const Plugin &) = delete;

    const std::string &path() const noexcept { return _path; }
    const serpens_nf_descriptor &descriptor() const noexcept { return *_desc; }
    std::string name() const { return _desc->name; }

private:
    std::string _path;
    void *_handle;
    const serpens_nf_descriptor *_desc;
};

class PluginRegistry {
public:
    // Loads every *.so in `directory` and in its immediate subdirectories
    // (sorted by path, so the result does not depend on readdir order).  Throws Error when the directory itself
    // cannot be read; individual plugins are refused, not thrown.
    void load_directory(const std::string &directory);
    // Loads one file; returns false (and records the refusal) when refused.
    bool load_file(const std::string &path);
    // Registers a descriptor that lives in this process (built-in NFs, the
    // chain fuzzer), checked as a loaded one is; `origin` stands for the path
    // in messages.  Returns false (and records the refusal) when refused.
    bool add_builtin(const serpens_nf_descriptor &desc, const std::string &origin);

    const Plugin *find(const std::string &name) const;
    const std::vector<PluginRefusal> &refusals() const noexcept { return _refusals; }
    std::vector<std::string> names() const;
    std::size_t size() const noexcept { return _plugins.size(); }

private:
    void refuse(const std::string &path, RefusalReason reason, const std::string &why);

    std::map<std::string, std::unique_ptr<Plugin>> _plugins;
    std::vector<PluginRefusal> _refusals;
};

// Checks a descriptor against this host's ABI; returns an empty string when
// valid, else the reason.  Exposed for tests and for `serpens-host --check`.
std::string validate_descriptor(const serpens_nf_descriptor &desc, RefusalReason &reason);

} // namespace serpens
