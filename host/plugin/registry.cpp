#include "plugin/registry.h"

#include "core/error.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>

namespace serpens {

const char *to_string(RefusalReason reason) noexcept
{
    switch (reason) {
    case RefusalReason::not_shared_object: return "not a shared object";
    case RefusalReason::insecure_permissions: return "insecure permissions";
    case RefusalReason::dlopen_failed: return "dlopen failed";
    case RefusalReason::missing_entry: return "missing entry symbol";
    case RefusalReason::null_descriptor: return "null descriptor";
    case RefusalReason::abi_major_mismatch: return "ABI major mismatch";
    case RefusalReason::descriptor_too_small: return "descriptor too small";
    case RefusalReason::invalid_descriptor: return "invalid descriptor";
    case RefusalReason::duplicate_name: return "duplicate NF name";
    }
    return "unknown";
}

Plugin::Plugin(std::string path, void *handle, const serpens_nf_descriptor *desc)
    : _path(std::move(path)), _handle(handle), _desc(desc)
{
}

Plugin::~Plugin()
{
    if (_handle != nullptr) {
        dlclose(_handle);
    }
}

namespace {

// True when the file starts with an ELF header whose type is ET_DYN.
bool is_elf_shared_object(const std::string &path, std::string &why)
{
    std::ifstream in(path, std::ios::binary);
    Elf64_Ehdr header{};
    in.read(reinterpret_cast<char *>(&header), sizeof(header));
    if (in.gcount() < SELFMAG || std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
        why = "not an ELF file";
        return false;
    }
    if (in.gcount() < static_cast<std::streamsize>(sizeof(header))) {
        why = "truncated ELF header";
        return false;
    }
    if (header.e_type != ET_DYN) {
        why = "ELF file is not a shared object (e_type " + std::to_string(header.e_type) + ")";
        return false;
    }
    return true;
}

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
               ", this host speaks ABI " + std::to_string(SERPENS_ABI_MAJOR) + "." +
               std::to_string(SERPENS_ABI_MINOR);
    }
    if (desc.struct_size < SERPENS_NF_DESCRIPTOR_V1_SIZE) {
        reason = RefusalReason::descriptor_too_small;
        return "descriptor struct_size " + std::to_string(desc.struct_size) +
               " is smaller than the " + std::to_string(SERPENS_NF_DESCRIPTOR_V1_SIZE) +
               " bytes ABI 1.0 requires";
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
        return "n_ports " + std::to_string(desc.n_ports) + " is outside 1.." +
               std::to_string(SERPENS_MAX_PORTS);
    }
    bool reserved_clear = desc.reserved0 == 0;
    for (void *slot : desc.reserved) {
        reserved_clear = reserved_clear && slot == nullptr;
    }
    if (!reserved_clear) {
        return "reserved fields must be zero";
    }
    return {};
}

void PluginRegistry::refuse(const std::string &path, RefusalReason reason, const std::string &why)
{
    std::string message = "plugin " + path + " refused: " + why;
    spdlog::error("{}", message);
    _refusals.push_back({path, reason, std::move(message)});
}

bool PluginRegistry::load_file(const std::string &path)
{
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        refuse(path, RefusalReason::not_shared_object, std::string("cannot stat: ") + std::strerror(errno));
        return false;
    }
    // Anyone who can rewrite the file can run code inside the data plane.
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        refuse(path, RefusalReason::insecure_permissions,
               "file is writable by group or others (mode " + [&] {
                   char buf[8];
                   std::snprintf(buf, sizeof buf, "%o", st.st_mode & 07777);
                   return std::string(buf);
               }() + "); run chmod go-w on it");
        return false;
    }
    std::string why;
    if (!is_elf_shared_object(path, why)) {
        refuse(path, RefusalReason::not_shared_object, why);
        return false;
    }
    void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        refuse(path, RefusalReason::dlopen_failed, dlerror());
        return false;
    }
    auto entry = reinterpret_cast<serpens_nf_entry_fn>(dlsym(handle, SERPENS_NF_ENTRY_SYMBOL));
    if (entry == nullptr) {
        dlclose(handle);
        refuse(path, RefusalReason::missing_entry,
               std::string("no exported symbol '") + SERPENS_NF_ENTRY_SYMBOL +
                   "' (use SERPENS_NF_REGISTER in the plugin)");
        return false;
    }
    const serpens_nf_descriptor *desc = entry();
    if (desc == nullptr) {
        dlclose(handle);
        refuse(path, RefusalReason::null_descriptor, "entry function returned NULL");
        return false;
    }
    RefusalReason reason{};
    why = validate_descriptor(*desc, reason);
    if (!why.empty()) {
        dlclose(handle);
        refuse(path, reason, why);
        return false;
    }
    if (auto existing = _plugins.find(desc->name); existing != _plugins.end()) {
        std::string name = desc->name;
        dlclose(handle);
        refuse(path, RefusalReason::duplicate_name,
               "NF '" + name + "' is already loaded from " + existing->second->path());
        return false;
    }
    spdlog::info("plugin {} loaded: NF '{}' version {} (ABI {}.{})", path, desc->name,
                 desc->version != nullptr ? desc->version : "?", desc->abi_major, desc->abi_minor);
    std::string name = desc->name;
    _plugins.emplace(name, std::make_unique<Plugin>(path, handle, desc));
    return true;
}

bool PluginRegistry::add_builtin(const serpens_nf_descriptor &desc, const std::string &origin)
{
    RefusalReason reason{};
    std::string why = validate_descriptor(desc, reason);
    if (!why.empty()) {
        refuse(origin, reason, why);
        return false;
    }
    if (auto existing = _plugins.find(desc.name); existing != _plugins.end()) {
        refuse(origin, RefusalReason::duplicate_name,
               "NF '" + std::string(desc.name) + "' is already loaded from " + existing->second->path());
        return false;
    }
    _plugins.emplace(desc.name, std::make_unique<Plugin>(origin, nullptr, &desc));
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
    std::vector<std::string> paths;
    for (const auto &entry : it) {
        if (entry.is_directory()) {
            for (const auto &inner : fs::directory_iterator(entry.path(), ec)) {
                if (inner.path().extension() == ".so") {
                    paths.push_back(inner.path().string());
                }
            }
        } else if (entry.path().extension() == ".so") {
            paths.push_back(entry.path().string());
        }
    }
    std::sort(paths.begin(), paths.end());
    for (const auto &path : paths) {
        load_file(path);
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

std::vector<std::string> PluginRegistry::names() const
{
    std::vector<std::string> out;
    for (const auto &[name, plugin] : _plugins) {
        out.push_back(name);
    }
    return out;
}

} // namespace serpens
