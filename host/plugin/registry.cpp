#include "plugin/registry.h"

#include "core/error.h"
#include "core/private_dir.h"
#include "state/record_layout.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <gelf.h>
#include <libelf.h>
#include <optional>
#include <string_view>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace serpens {

const char *to_string(RefusalReason reason) noexcept
{
    switch (reason) {
    case RefusalReason::not_shared_object:
        return "not a shared object";
    case RefusalReason::insecure_permissions:
        return "insecure permissions";
    case RefusalReason::dlopen_failed:
        return "dlopen failed";
    case RefusalReason::missing_entry:
        return "missing entry symbol";
    case RefusalReason::null_descriptor:
        return "null descriptor";
    case RefusalReason::host_too_old:
        return "host too old";
    case RefusalReason::abi_major_mismatch:
        return "ABI major mismatch";
    case RefusalReason::descriptor_too_small:
        return "descriptor too small";
    case RefusalReason::invalid_descriptor:
        return "invalid descriptor";
    case RefusalReason::duplicate_name:
        return "duplicate NF name";
    case RefusalReason::not_regular_file:
        return "not a regular file";
    case RefusalReason::unreadable:
        return "unreadable";
    case RefusalReason::too_large:
        return "too large";
    case RefusalReason::foreign_owner:
        return "foreign owner";
    case RefusalReason::insecure_directory:
        return "insecure directory";
    case RefusalReason::wrong_machine:
        return "built for another machine";
    }
    return "unknown";
}

namespace {

std::string image_path(int image_fd) { return "/proc/self/fd/" + std::to_string(image_fd); }

// dlcloses `handle`, then closes the memfd it was loaded from unless the
// object is still mapped (marked nodelete, or pinned by another object): then
// its /proc/self/fd name stays registered in the dynamic linker, and reusing
// the fd number would make a later dlopen return this object instead.
void unload(void *handle, int image_fd)
{
    if (handle != nullptr) {
        dlclose(handle);
        if (void *still = dlopen(image_path(image_fd).c_str(), RTLD_LAZY | RTLD_NOLOAD); still != nullptr) {
            dlclose(still);
            spdlog::debug("plugin image {} stays mapped after dlclose; keeping its fd", image_path(image_fd));
            return;
        }
    }
    if (image_fd >= 0) {
        ::close(image_fd);
    }
}

} // namespace

Plugin::Plugin(std::string path, void *handle, const serpens_nf_descriptor *desc, int image_fd, uint64_t digest)
    : _path(std::move(path)), _handle(handle), _desc(desc), _image_fd(image_fd), _digest(digest)
{}

Plugin::~Plugin() { unload(_handle, _image_fd); }

void *Plugin::symbol(const char *name) const noexcept { return dlsym(_handle, name); }

namespace {

struct Problem {
    RefusalReason reason;
    std::string why;
};

class Fd {
public:
    explicit Fd(int fd) noexcept : _fd(fd) {}
    ~Fd()
    {
        if (_fd >= 0) {
            ::close(_fd);
        }
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;

    int get() const noexcept { return _fd; }
    int release() noexcept { return std::exchange(_fd, -1); }

private:
    int _fd;
};

// A read-only view of a sealed memfd for libelf; unmapped on scope exit.
class Mapping {
public:
    Mapping(int fd, std::size_t size)
        // Private and writable so libelf may convert in place without touching the memfd.
        : _size(size), _data(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0))
    {}
    ~Mapping()
    {
        if (_data != MAP_FAILED) {
            ::munmap(_data, _size);
        }
    }
    Mapping(const Mapping &) = delete;
    Mapping &operator=(const Mapping &) = delete;

    bool ok() const noexcept { return _data != MAP_FAILED; }
    char *data() const noexcept { return static_cast<char *>(_data); }

private:
    std::size_t _size;
    void *_data;
};

std::string errno_text() { return std::strerror(errno); }

// Why the open directory `fd` may not hold plugins (empty when it may):
// whoever can write to it can swap a plugin for their own code.
std::string directory_problem(int fd, const std::string &directory)
{
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        return "cannot stat directory " + directory + ": " + errno_text();
    }
    if (!owned_by_host_user(st.st_uid)) {
        return "directory " + directory + " is " + foreign_owner_text(st.st_uid) + "; chown it";
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        return "directory " + directory + " is writable by group or others (mode " + mode_text(st.st_mode) +
               "); run chmod go-w " + directory;
    }
    return {};
}

// Opens a directory and says why it may not hold plugins (empty when it may).
std::string directory_problem(const std::string &directory)
{
    Fd dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0) {
        return "cannot open directory " + directory + ": " + errno_text();
    }
    return directory_problem(dir.get(), directory);
}

// The ELF identity of this host's own code: a plugin must match it.
constexpr unsigned char host_elf_class = sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32;
constexpr unsigned char host_elf_data = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
#if defined(__x86_64__)
constexpr GElf_Half host_elf_machine = EM_X86_64;
#elif defined(__aarch64__)
constexpr GElf_Half host_elf_machine = EM_AARCH64;
#elif defined(__powerpc64__)
constexpr GElf_Half host_elf_machine = EM_PPC64;
#elif defined(__riscv)
constexpr GElf_Half host_elf_machine = EM_RISCV;
#elif defined(__i386__)
constexpr GElf_Half host_elf_machine = EM_386;
#elif defined(__arm__)
constexpr GElf_Half host_elf_machine = EM_ARM;
#else
#error "add this architecture's ELF e_machine value to host_elf_machine"
#endif

const char *class_name(unsigned char elf_class)
{
    return elf_class == ELFCLASS64 ? "64-bit" : elf_class == ELFCLASS32 ? "32-bit" : "unknown-class";
}

class ElfHandle {
public:
    explicit ElfHandle(Elf *elf) noexcept : _elf(elf) {}
    ~ElfHandle()
    {
        if (_elf != nullptr) {
            elf_end(_elf);
        }
    }
    ElfHandle(const ElfHandle &) = delete;
    ElfHandle &operator=(const ElfHandle &) = delete;

    Elf *get() const noexcept { return _elf; }

private:
    Elf *_elf;
};

// Why `sym` cannot be the entry function dlsym would find, or empty.
std::string entry_symbol_problem(const GElf_Sym &sym)
{
    std::string name = std::string("'") + SERPENS_NF_ENTRY_SYMBOL + "'";
    if (sym.st_shndx == SHN_UNDEF) {
        return name + " is only referenced, not defined";
    }
    unsigned bind = GELF_ST_BIND(sym.st_info);
    unsigned visibility = GELF_ST_VISIBILITY(sym.st_other);
    if ((bind != STB_GLOBAL && bind != STB_WEAK) || (visibility != STV_DEFAULT && visibility != STV_PROTECTED)) {
        return name + " is not exported";
    }
    if (GELF_ST_TYPE(sym.st_info) != STT_FUNC) {
        return name + " is not a function";
    }
    return {};
}

// Looks for the entry function in the dynamic symbol table, the one dlsym uses.
std::optional<Problem> check_entry_symbol(Elf *elf)
{
    std::string unsuitable;
    std::size_t sym_size = gelf_fsize(elf, ELF_T_SYM, 1, EV_CURRENT);
    Elf_Scn *scn = nullptr;
    while (sym_size != 0 && (scn = elf_nextscn(elf, scn)) != nullptr) {
        GElf_Shdr shdr{};
        if (gelf_getshdr(scn, &shdr) == nullptr || shdr.sh_type != SHT_DYNSYM) {
            continue;
        }
        Elf_Data *data = elf_getdata(scn, nullptr);
        if (data == nullptr) {
            return Problem{RefusalReason::not_shared_object,
                           std::string("unreadable dynamic symbol table: ") + elf_errmsg(-1)};
        }
        std::size_t count = std::min<std::size_t>(data->d_size / sym_size, INT_MAX);
        for (std::size_t i = 0; i < count; ++i) {
            GElf_Sym sym{};
            if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr) {
                break;
            }
            const char *name = elf_strptr(elf, shdr.sh_link, sym.st_name);
            if (name == nullptr || std::strcmp(name, SERPENS_NF_ENTRY_SYMBOL) != 0) {
                continue;
            }
            std::string why = entry_symbol_problem(sym);
            if (why.empty()) {
                return std::nullopt;
            }
            unsuitable = why;
        }
    }
    if (!unsuitable.empty()) {
        return Problem{RefusalReason::missing_entry, unsuitable + " (use SERPENS_NF_REGISTER in the plugin)"};
    }
    return Problem{RefusalReason::missing_entry, std::string("no exported symbol '") + SERPENS_NF_ENTRY_SYMBOL +
                                                     "' (use SERPENS_NF_REGISTER in the plugin)"};
}

// Checks an ELF image in memory: a shared object for this machine that
// exports the entry function.  libelf bounds-checks every table it reads.
std::optional<Problem> check_elf(char *image, std::size_t size)
{
    if (size < SELFMAG || std::memcmp(image, ELFMAG, SELFMAG) != 0) {
        return Problem{RefusalReason::not_shared_object, "not an ELF file"};
    }
    std::size_t header_size =
        size > EI_CLASS && image[EI_CLASS] == ELFCLASS32 ? sizeof(Elf32_Ehdr) : sizeof(Elf64_Ehdr);
    if (size < header_size) {
        return Problem{RefusalReason::not_shared_object, "truncated ELF header"};
    }
    auto elf_class = static_cast<unsigned char>(image[EI_CLASS]);
    if (elf_class != host_elf_class) {
        return Problem{RefusalReason::wrong_machine, std::string("built as a ") + class_name(elf_class) +
                                                         " ELF, this host is " + class_name(host_elf_class)};
    }
    if (static_cast<unsigned char>(image[EI_DATA]) != host_elf_data) {
        return Problem{RefusalReason::wrong_machine, "built for the other byte order than this host's"};
    }
    // libelf refuses every call until told which ELF version we speak.
    static const bool libelf_ready = elf_version(EV_CURRENT) != EV_NONE;
    if (!libelf_ready) {
        return Problem{RefusalReason::not_shared_object, std::string("libelf unusable: ") + elf_errmsg(-1)};
    }
    ElfHandle elf(elf_memory(image, size));
    GElf_Ehdr ehdr{};
    if (elf.get() == nullptr || elf_kind(elf.get()) != ELF_K_ELF || gelf_getehdr(elf.get(), &ehdr) == nullptr) {
        return Problem{RefusalReason::not_shared_object, std::string("malformed ELF file: ") + elf_errmsg(-1)};
    }
    if (ehdr.e_type != ET_DYN) {
        return Problem{RefusalReason::not_shared_object,
                       "ELF file is not a shared object (e_type " + std::to_string(ehdr.e_type) + ")"};
    }
    if (ehdr.e_machine != host_elf_machine) {
        return Problem{RefusalReason::wrong_machine, "built for ELF machine " + std::to_string(ehdr.e_machine) +
                                                         ", this host is machine " + std::to_string(host_elf_machine)};
    }
    return check_entry_symbol(elf.get());
}

struct PrivateCopy {
    int fd; // -1 when `problem` is set
    std::optional<Problem> problem;
};

// Copies the open file into a sealed memfd (at most max_plugin_bytes), so
// neither later writes to the file nor anyone holding the memfd can change
// what is checked and loaded.
PrivateCopy private_copy(int file_fd, const std::string &name)
{
    auto failed = [](RefusalReason reason, std::string why) {
        return PrivateCopy{-1, Problem{reason, std::move(why)}};
    };
    Fd image(::memfd_create(("serpens_nf:" + name).substr(0, 240).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (image.get() < 0) {
        return failed(RefusalReason::unreadable, "cannot create a private copy (memfd_create): " + errno_text());
    }
    std::vector<char> buffer(std::size_t{1} << 16);
    std::size_t total = 0;
    for (;;) {
        ssize_t got = ::read(file_fd, buffer.data(), buffer.size());
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            return failed(RefusalReason::unreadable, "cannot read: " + errno_text());
        }
        if (got == 0) {
            break;
        }
        total += static_cast<std::size_t>(got);
        // The file may grow while it is read: bound the copy, not just fstat's size.
        if (total > max_plugin_bytes) {
            return failed(RefusalReason::too_large,
                          "file grew beyond the " + std::to_string(max_plugin_bytes >> 20) + " MiB a plugin may have");
        }
        for (ssize_t done = 0; done < got;) {
            ssize_t put = ::write(image.get(), buffer.data() + done, static_cast<std::size_t>(got - done));
            if (put < 0 && errno == EINTR) {
                continue;
            }
            if (put < 0) {
                return failed(RefusalReason::unreadable, "cannot write the private copy: " + errno_text());
            }
            done += put;
        }
    }
    if (::fcntl(image.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
        return failed(RefusalReason::unreadable, "cannot seal the private copy: " + errno_text());
    }
    return PrivateCopy{image.release(), std::nullopt};
}

} // namespace

namespace {

bool valid_nf_name(const char *name)
{
    if (name == nullptr || *name == '\0' || std::strlen(name) > 63) {
        return false;
    }
    for (const char *c = name; *c != '\0'; ++c) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

} // namespace

std::string validate_descriptor(const serpens_nf_descriptor &desc, RefusalReason &reason)
{
    if (desc.abi_major != SERPENS_ABI_MAJOR) {
        reason = RefusalReason::abi_major_mismatch;
        return "built for ABI " + std::to_string(desc.abi_major) + "." + std::to_string(desc.abi_minor) +
               ", this host speaks ABI " + std::to_string(SERPENS_ABI_MAJOR) + "." + std::to_string(SERPENS_ABI_MINOR);
    }
    if (desc.struct_size < SERPENS_NF_DESCRIPTOR_V1_SIZE) {
        reason = RefusalReason::descriptor_too_small;
        return "descriptor struct_size " + std::to_string(desc.struct_size) + " is smaller than the " +
               std::to_string(SERPENS_NF_DESCRIPTOR_V1_SIZE) + " bytes ABI 1.0 requires";
    }
    reason = RefusalReason::invalid_descriptor;
    if (!valid_nf_name(desc.name)) {
        return "NF name must be 1-63 characters of [a-z0-9_-]";
    }
    if (desc.init == nullptr || desc.process == nullptr) {
        return std::string("NF '") + desc.name + "' has no " + (desc.init == nullptr ? "init" : "process") +
               " callback";
    }
    if (desc.flags != 0) {
        return "unknown flag bits 0x" + [&] {
            char buf[16];
            std::snprintf(buf, sizeof buf, "%x", desc.flags);
            return std::string(buf);
        }() + " (ABI 1.0 defines none)";
    }
    if (desc.n_ports < 1 || desc.n_ports > SERPENS_MAX_PORTS) {
        return "n_ports " + std::to_string(desc.n_ports) + " is outside 1.." + std::to_string(SERPENS_MAX_PORTS);
    }
    bool reserved_clear = desc.reserved0 == 0;
    for (void *slot : desc.reserved) {
        reserved_clear = reserved_clear && slot == nullptr;
    }
    // Fields appended in 1.4: a 1.0..1.3 descriptor ends before them.
    const bool has_1_4 = desc.struct_size >= offsetof(serpens_nf_descriptor, reserved2) + sizeof desc.reserved2;
    if (has_1_4) {
        reserved_clear = reserved_clear && desc.reserved1 == 0 && desc.reserved2 == 0;
    }
    if (has_descriptor_1_5(desc)) {
        reserved_clear = reserved_clear && desc.reserved3 == 0;
        if (desc.flow_state_size > SERPENS_MAX_FLOW_STATE) {
            return "flow_state_size " + std::to_string(desc.flow_state_size) + " is above the " +
                   std::to_string(SERPENS_MAX_FLOW_STATE) + " bytes an NF may keep per flow";
        }
    }
    if (has_descriptor_1_6(desc)) {
        reserved_clear = reserved_clear && desc.reserved4 == 0;
    }
    if (state::has_table_layouts(desc)) {
        reserved_clear = reserved_clear && desc.reserved5 == 0;
        if (auto why = state::check_declared_layouts(desc); !why.empty()) {
            return why;
        }
    }
    if (!reserved_clear) {
        return "reserved fields must be zero";
    }
    if (has_1_4 && desc.min_host_minor > SERPENS_ABI_MINOR) {
        reason = RefusalReason::host_too_old;
        return std::string("NF '") + desc.name + "' needs host ABI " + std::to_string(SERPENS_ABI_MAJOR) + "." +
               std::to_string(desc.min_host_minor) + ", this host speaks " + std::to_string(SERPENS_ABI_MAJOR) + "." +
               std::to_string(SERPENS_ABI_MINOR);
    }
    return {};
}

void PluginRegistry::refuse(const std::string &path, RefusalReason reason, const std::string &why)
{
    std::string message = "plugin " + path + " refused: " + why;
    spdlog::error("{}", message);
    _refusals.push_back({path, reason, std::move(message)});
}

std::shared_ptr<Plugin> PluginRegistry::open_plugin(const std::string &path)
{
    std::filesystem::path file(path);
    std::string directory = file.has_parent_path() ? file.parent_path().string() : ".";
    Fd dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0) {
        refuse(path, RefusalReason::unreadable, "cannot open its directory " + directory + ": " + errno_text());
        return nullptr;
    }
    if (std::string why = directory_problem(dir.get(), directory); !why.empty()) {
        refuse(path, RefusalReason::insecure_directory, why);
        return nullptr;
    }
    // Opened relative to the directory just checked; O_NOFOLLOW because a
    // symlink could lead past that check, O_NONBLOCK so a FIFO cannot hang us.
    Fd in(::openat(dir.get(), file.filename().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (in.get() < 0) {
        if (errno == ELOOP) {
            refuse(path, RefusalReason::not_regular_file, "is a symbolic link; install the plugin file itself");
        } else {
            refuse(path, RefusalReason::unreadable, "cannot open: " + errno_text());
        }
        return nullptr;
    }
    struct stat st {};
    if (::fstat(in.get(), &st) != 0) {
        refuse(path, RefusalReason::unreadable, "cannot stat: " + errno_text());
        return nullptr;
    }
    if (!S_ISREG(st.st_mode)) {
        refuse(path, RefusalReason::not_regular_file, "is not a regular file");
        return nullptr;
    }
    // Its owner can rewrite it, so its owner could run code inside the data plane.
    if (!owned_by_host_user(st.st_uid)) {
        refuse(path, RefusalReason::foreign_owner, "file is " + foreign_owner_text(st.st_uid) + "; chown it");
        return nullptr;
    }
    // Anyone who can rewrite the file can run code inside the data plane.
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        refuse(path, RefusalReason::insecure_permissions,
               "file is writable by group or others (mode " + mode_text(st.st_mode) + "); run chmod go-w on it");
        return nullptr;
    }
    if (static_cast<std::uint64_t>(st.st_size) > max_plugin_bytes) {
        refuse(path, RefusalReason::too_large,
               "file is " + std::to_string(st.st_size) + " bytes, more than the " +
                   std::to_string(max_plugin_bytes >> 20) + " MiB a plugin may have");
        return nullptr;
    }
    PrivateCopy copy = private_copy(in.get(), file.filename().string());
    if (copy.problem) {
        refuse(path, copy.problem->reason, copy.problem->why);
        return nullptr;
    }
    Fd image(copy.fd);
    struct stat image_st {};
    if (::fstat(image.get(), &image_st) != 0) {
        refuse(path, RefusalReason::unreadable, "cannot stat the private copy: " + errno_text());
        return nullptr;
    }
    auto size = static_cast<std::size_t>(image_st.st_size);
    if (size == 0) {
        refuse(path, RefusalReason::not_shared_object, "not an ELF file (empty)");
        return nullptr;
    }
    // Checked on the sealed copy, which is exactly what dlopen will map.
    uint64_t digest = 0;
    {
        Mapping mapping(image.get(), size);
        if (!mapping.ok()) {
            refuse(path, RefusalReason::unreadable, "cannot map the private copy: " + errno_text());
            return nullptr;
        }
        if (std::optional<Problem> problem = check_elf(mapping.data(), size)) {
            refuse(path, problem->reason, problem->why);
            return nullptr;
        }
        // Not a security check (the file's owner is trusted): it only tells a
        // reload which files changed.
        digest = std::hash<std::string_view>{}(std::string_view(static_cast<const char *>(mapping.data()), size));
    }
    if (std::shared_ptr<Plugin> same = unchanged(path, digest)) {
        return same;
    }
    void *handle = dlopen(image_path(image.get()).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        refuse(path, RefusalReason::dlopen_failed, dlerror());
        return nullptr;
    }
    // The checks above read the section headers; dlsym reads the dynamic
    // segment, which a crafted file could make disagree.
    auto entry = reinterpret_cast<serpens_nf_entry_fn>(dlsym(handle, SERPENS_NF_ENTRY_SYMBOL));
    if (entry == nullptr) {
        unload(handle, image.release());
        refuse(path, RefusalReason::missing_entry,
               std::string("no exported symbol '") + SERPENS_NF_ENTRY_SYMBOL +
                   "' (use SERPENS_NF_REGISTER in the plugin)");
        return nullptr;
    }
    const serpens_nf_descriptor *desc = entry();
    if (desc == nullptr) {
        unload(handle, image.release());
        refuse(path, RefusalReason::null_descriptor, "entry function returned NULL");
        return nullptr;
    }
    RefusalReason reason{};
    std::string why = validate_descriptor(*desc, reason);
    if (!why.empty()) {
        unload(handle, image.release());
        refuse(path, reason, why);
        return nullptr;
    }
    return std::make_shared<Plugin>(path, handle, desc, image.release(), digest);
}

std::shared_ptr<Plugin> PluginRegistry::unchanged(const std::string &path, uint64_t digest) const
{
    if (_previous == nullptr) {
        return nullptr;
    }
    for (const auto &[name, plugin] : _previous->_plugins) {
        if (plugin->path() == path && plugin->digest() == digest && digest != 0) {
            return plugin;
        }
    }
    return nullptr;
}

bool PluginRegistry::admit(std::shared_ptr<Plugin> plugin)
{
    const serpens_nf_descriptor &desc = plugin->descriptor();
    if (_previous != nullptr && _previous->find(plugin->name()) == plugin.get()) {
        spdlog::debug("plugin {} unchanged: NF '{}'", plugin->path(), desc.name);
        _plugins.emplace(plugin->name(), std::move(plugin));
        return true;
    }
    spdlog::info("plugin {} loaded: NF '{}' version {} (ABI {}.{})", plugin->path(), desc.name,
                 desc.version != nullptr ? desc.version : "?", desc.abi_major, desc.abi_minor);
    std::string name = plugin->name();
    _plugins.emplace(std::move(name), std::move(plugin));
    return true;
}

std::string PluginRegistry::already_loaded(const std::string &name) const
{
    auto existing = _plugins.find(name);
    return existing == _plugins.end() ? std::string()
                                      : "NF '" + name + "' is already loaded from " + existing->second->path();
}

bool PluginRegistry::load_file(const std::string &path)
{
    std::shared_ptr<Plugin> plugin = open_plugin(path);
    if (plugin == nullptr) {
        return false;
    }
    if (std::string why = already_loaded(plugin->name()); !why.empty()) {
        refuse(path, RefusalReason::duplicate_name, why);
        return false;
    }
    return admit(std::move(plugin));
}

bool PluginRegistry::add_builtin(const serpens_nf_descriptor &desc, const std::string &origin)
{
    RefusalReason reason{};
    std::string why = validate_descriptor(desc, reason);
    if (!why.empty()) {
        refuse(origin, reason, why);
        return false;
    }
    if (why = already_loaded(desc.name); !why.empty()) {
        refuse(origin, RefusalReason::duplicate_name, why);
        return false;
    }
    _plugins.emplace(desc.name, std::make_shared<Plugin>(origin, nullptr, &desc, -1));
    return true;
}

void PluginRegistry::load_directory(const std::string &directory)
{
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::directory_iterator it(directory, ec);
    if (ec) {
        throw Error("cannot read plugin directory " + directory + ": " + ec.message());
    }
    // A plugin directory holds *.so files, or one folder per plugin holding
    // them (the layout of a build tree: plugins/<name>/serpens_nf_<name>.so).
    // Without exceptions: an entry that is a symbolic-link loop, or that
    // goes away meanwhile, is not a folder (a .so among them is refused
    // when opened), and must not end the host on a reload.
    std::vector<std::string> paths;
    for (; it != fs::directory_iterator(); it.increment(ec)) {
        std::error_code type_ec;
        if (it->is_directory(type_ec)) {
            fs::directory_iterator inner(it->path(), type_ec);
            for (; !type_ec && inner != fs::directory_iterator(); inner.increment(type_ec)) {
                if (inner->path().extension() == ".so") {
                    paths.push_back(inner->path().string());
                }
            }
        } else if (it->path().extension() == ".so") {
            paths.push_back(it->path().string());
        }
    }
    if (ec) { // a failed step ends the walk as the end would
        throw Error("cannot read plugin directory " + directory + ": " + ec.message());
    }
    std::sort(paths.begin(), paths.end()); // for a stable log, not to pick winners
    // Files in a subfolder are checked against their own folder by
    // open_plugin; this directory could still rename those folders.
    std::string unsafe = directory_problem(directory);
    std::map<std::string, std::vector<std::shared_ptr<Plugin>>> by_name;
    for (const auto &path : paths) {
        if (!unsafe.empty()) {
            refuse(path, RefusalReason::insecure_directory, unsafe);
        } else if (std::shared_ptr<Plugin> plugin = open_plugin(path)) {
            std::string name = plugin->name();
            by_name[name].push_back(std::move(plugin));
        }
    }
    // Only now, with every claimant known, can a name be given to one file.
    for (auto &[name, claimants] : by_name) {
        std::vector<std::string> claimant_paths;
        for (const auto &plugin : claimants) {
            claimant_paths.push_back(plugin->path());
        }
        std::string why = already_loaded(name);
        if (why.empty() && claimants.size() == 1) {
            admit(std::move(claimants.front()));
            continue;
        }
        if (why.empty()) {
            why = "NF '" + name + "' is claimed by " + claimant_paths.front();
            for (std::size_t i = 1; i < claimant_paths.size(); ++i) {
                why += (i + 1 == claimant_paths.size() ? " and " : ", ") + claimant_paths[i];
            }
            why += "; none is loaded until only one remains";
        }
        claimants.clear(); // dlclose them before saying so
        for (const auto &path : claimant_paths) {
            refuse(path, RefusalReason::duplicate_name, why);
        }
    }
    if (_plugins.empty()) {
        spdlog::warn("no NF plugin loaded from {}", directory);
    }
}

const Plugin *PluginRegistry::find(const std::string &name) const
{
    auto it = _plugins.find(name);
    return it == _plugins.end() ? nullptr : it->second.get();
}

std::shared_ptr<const Plugin> PluginRegistry::share(const std::string &name) const
{
    auto it = _plugins.find(name);
    return it == _plugins.end() ? nullptr : it->second;
}

std::vector<std::string> PluginRegistry::names() const
{
    std::vector<std::string> out;
    for (const auto &[name, plugin] : _plugins) {
        out.push_back(name);
    }
    return out;
}

} // namespace serpens
