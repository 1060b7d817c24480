// The plugin loader refuses each kind of bad plugin with a clear reason and
// keeps loading the others.

#include "support.h"

#include "core/error.h"
#include "plugin/registry.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace serpens;
using serpens::test::install_plugin;
using serpens::test::ScratchDir;

namespace {

const PluginRefusal *refusal_for(const PluginRegistry &registry, const std::string &path)
{
    for (const auto &refusal : registry.refusals()) {
        if (refusal.path == path) {
            return &refusal;
        }
    }
    return nullptr;
}

// Loads `name` beside a good plugin and checks it alone is refused for `reason`.
void expect_refused(const std::string &name, RefusalReason reason, const std::string &message_part)
{
    ScratchDir dir;
    install_plugin(dir, "noop");
    std::string bad = install_plugin(dir, name);
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    CHECK(registry.find("noop") != nullptr); // the others still load
    const PluginRefusal *refusal = refusal_for(registry, bad);
    REQUIRE_MESSAGE(refusal != nullptr, name << " was not refused");
    CHECK(refusal->reason == reason);
    CHECK_MESSAGE(refusal->message.find(message_part) != std::string::npos, refusal->message);
    CHECK(registry.size() == 1);
}

std::string read_bytes(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Rewrites `path` in place, as cp onto an existing file does: the same inode,
// truncated, then written.
void overwrite_in_place(const std::string &path, const std::string &bytes)
{
    int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC);
    REQUIRE_MESSAGE(fd >= 0, "cannot open " << path);
    CHECK(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
}

bool exists(const std::string &path) { return ::access(path.c_str(), F_OK) == 0; }

} // namespace

TEST_CASE("a valid C99 plugin loads and exposes its descriptor")
{
    ScratchDir dir;
    install_plugin(dir, "noop");
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    const Plugin *noop = registry.find("noop");
    REQUIRE(noop != nullptr);
    CHECK(noop->descriptor().abi_major == SERPENS_ABI_MAJOR);
    CHECK(noop->descriptor().n_ports == 1);
    CHECK(registry.refusals().empty());
}

TEST_CASE("loader refuses a file that is not an ELF shared object")
{
    ScratchDir dir;
    install_plugin(dir, "noop");
    std::string text = dir.write("serpens_nf_text.so", "this is not a plugin\n");
    std::string rel =
        dir.write("serpens_nf_rel.so", std::string("\x7f"
                                                   "ELF\x02\x01\x01",
                                                   7) +
                                           std::string(9, '\0') + std::string("\x01\x00", 2) + std::string(64, '\0'));
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    CHECK(registry.find("noop") != nullptr);
    const PluginRefusal *r1 = refusal_for(registry, text);
    const PluginRefusal *r2 = refusal_for(registry, rel);
    REQUIRE(r1 != nullptr);
    REQUIRE(r2 != nullptr);
    CHECK(r1->reason == RefusalReason::not_shared_object);
    CHECK(r1->message.find("not an ELF file") != std::string::npos);
    CHECK(r2->reason == RefusalReason::not_shared_object);
    CHECK(r2->message.find("not a shared object") != std::string::npos);
}

TEST_CASE("loader refuses a plugin without the entry symbol")
{
    expect_refused("bad_no_entry", RefusalReason::missing_entry, "serpens_nf_entry");
}

TEST_CASE("loader refuses an ABI major mismatch")
{
    expect_refused("bad_abi", RefusalReason::abi_major_mismatch, "built for ABI 2.0");
}

TEST_CASE("loader refuses a descriptor smaller than ABI 1.0's")
{
    expect_refused("bad_small", RefusalReason::descriptor_too_small, "struct_size 16");
}

TEST_CASE("loader refuses a plugin that needs a newer host, saying which")
{
    const std::string needs = "needs host ABI " + std::to_string(SERPENS_ABI_MAJOR) + "." +
                              std::to_string(SERPENS_ABI_MINOR + 1) + ", this host speaks " +
                              std::to_string(SERPENS_ABI_MAJOR) + "." + std::to_string(SERPENS_ABI_MINOR);
    expect_refused("bad_new_host", RefusalReason::host_too_old, needs);
}

TEST_CASE("loader refuses non-zero reserved fields appended in ABI 1.4")
{
    expect_refused("bad_reserved_1_4", RefusalReason::invalid_descriptor, "reserved fields must be zero");
}

TEST_CASE("a plugin built against the frozen ABI 1.0 header still loads")
{
    ScratchDir dir;
    install_plugin(dir, "abi10");
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    const Plugin *old = registry.find("abi10");
    REQUIRE_MESSAGE(old != nullptr, (registry.refusals().empty() ? "" : registry.refusals()[0].message));
    // Its descriptor ends where 1.0's did: the host must not read past it.
    CHECK(old->descriptor().struct_size == SERPENS_NF_DESCRIPTOR_V1_SIZE);
    CHECK(old->descriptor().abi_minor == 0);
    CHECK(registry.refusals().empty());
}

TEST_CASE("loader refuses unknown flags and a missing process callback")
{
    expect_refused("bad_flags", RefusalReason::invalid_descriptor, "unknown flag bits 0x80");
    expect_refused("bad_no_process", RefusalReason::invalid_descriptor, "no process callback");
}

TEST_CASE("two plugins claiming one NF name are both refused, whichever sorts first")
{
    ScratchDir dir;
    std::string first = install_plugin(dir, "noop");
    std::string twin = install_plugin(dir, "noop_twin");
    install_plugin(dir, "noop2");
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    CHECK(registry.find("noop") == nullptr);
    CHECK(registry.find("noop2") != nullptr);
    for (const auto &path : {first, twin}) {
        const PluginRefusal *refusal = refusal_for(registry, path);
        REQUIRE_MESSAGE(refusal != nullptr, path << " was not refused");
        CHECK(refusal->reason == RefusalReason::duplicate_name);
        CHECK_MESSAGE(refusal->message.find(first) != std::string::npos, refusal->message);
        CHECK_MESSAGE(refusal->message.find(twin) != std::string::npos, refusal->message);
    }
    CHECK(registry.refusals().size() == 2);
}

TEST_CASE("load_file refuses a name already loaded, naming the loaded file")
{
    ScratchDir dir;
    std::string first = install_plugin(dir, "noop");
    std::string twin = install_plugin(dir, "noop_twin");
    PluginRegistry registry;
    CHECK(registry.load_file(first));
    CHECK_FALSE(registry.load_file(twin));
    REQUIRE(registry.find("noop") != nullptr);
    CHECK(registry.find("noop")->path() == first);
    const PluginRefusal *refusal = refusal_for(registry, twin);
    REQUIRE(refusal != nullptr);
    CHECK(refusal->reason == RefusalReason::duplicate_name);
    CHECK(refusal->message.find("already loaded from " + first) != std::string::npos);
}

TEST_CASE("a refused plugin's ELF constructors never run")
{
    ScratchDir dir;
    install_plugin(dir, "noop");
    std::string ctor = install_plugin(dir, "ctor");
    std::string marker = dir / "constructor-ran";
    REQUIRE(::setenv("SERPENS_TEST_CTOR_MARKER", marker.c_str(), 1) == 0);
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    CHECK(registry.find("noop") != nullptr);
    const PluginRefusal *refusal = refusal_for(registry, ctor);
    REQUIRE(refusal != nullptr);
    CHECK(refusal->reason == RefusalReason::missing_entry);
    CHECK(refusal->message.find("serpens_nf_entry") != std::string::npos);
    CHECK_MESSAGE(!exists(marker), "the constructor ran before the refusal");

    // The control: dlopen itself does run it, so the check above can fail.
    void *handle = dlopen(ctor.c_str(), RTLD_NOW | RTLD_LOCAL);
    REQUIRE(handle != nullptr);
    CHECK(exists(marker));
    dlclose(handle);
    ::unsetenv("SERPENS_TEST_CTOR_MARKER");
}

TEST_CASE("loader refuses a plugin owned by another user")
{
    if (::geteuid() != 0) {
        MESSAGE("skipped: only root can chown a file to another user");
        return;
    }
    ScratchDir dir;
    install_plugin(dir, "noop");
    std::string foreign = install_plugin(dir, "noop2", std::filesystem::perms(0644));
    REQUIRE(::chown(foreign.c_str(), 65534, 65534) == 0);
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    CHECK(registry.find("noop") != nullptr);
    CHECK(registry.find("noop2") == nullptr);
    const PluginRefusal *refusal = refusal_for(registry, foreign);
    REQUIRE(refusal != nullptr);
    CHECK(refusal->reason == RefusalReason::foreign_owner);
    CHECK_MESSAGE(refusal->message.find("owned by uid 65534") != std::string::npos, refusal->message);
}

TEST_CASE("loader refuses plugins in a directory writable by group or others")
{
    SUBCASE("the plugin directory itself")
    {
        ScratchDir dir;
        std::string noop = install_plugin(dir, "noop");
        std::filesystem::permissions(dir.path(), std::filesystem::perms(0777));
        PluginRegistry registry;
        registry.load_directory(dir.path().string());
        CHECK(registry.size() == 0);
        const PluginRefusal *refusal = refusal_for(registry, noop);
        REQUIRE(refusal != nullptr);
        CHECK(refusal->reason == RefusalReason::insecure_directory);
        CHECK_MESSAGE(refusal->message.find("chmod go-w " + dir.path().string()) != std::string::npos,
                      refusal->message);
    }
    SUBCASE("one plugin's own folder, while the others load")
    {
        ScratchDir dir;
        install_plugin(dir, "noop");
        std::filesystem::path folder = dir.path() / "noop2";
        std::filesystem::create_directory(folder);
        std::filesystem::permissions(folder, std::filesystem::perms(0775));
        std::string inner = (folder / "serpens_nf_noop2.so").string();
        std::filesystem::copy_file(serpens::test::built_plugin("noop2"), inner);
        PluginRegistry registry;
        registry.load_directory(dir.path().string());
        CHECK(registry.find("noop") != nullptr);
        CHECK(registry.find("noop2") == nullptr);
        const PluginRefusal *refusal = refusal_for(registry, inner);
        REQUIRE(refusal != nullptr);
        CHECK(refusal->reason == RefusalReason::insecure_directory);
        CHECK_MESSAGE(refusal->message.find("chmod go-w " + folder.string()) != std::string::npos, refusal->message);
    }
    SUBCASE("load_file checks the file's directory too")
    {
        ScratchDir dir;
        std::string noop = install_plugin(dir, "noop");
        std::filesystem::permissions(dir.path(), std::filesystem::perms(0757));
        PluginRegistry registry;
        CHECK_FALSE(registry.load_file(noop));
        REQUIRE(refusal_for(registry, noop) != nullptr);
        CHECK(refusal_for(registry, noop)->reason == RefusalReason::insecure_directory);
    }
}

TEST_CASE("loader refuses a symlink, a symlink loop and a FIFO")
{
    ScratchDir dir;
    install_plugin(dir, "noop");
    std::string link = dir / "serpens_nf_link.so";
    std::filesystem::create_symlink(serpens::test::built_plugin("noop2"), link);
    std::string fifo = dir / "serpens_nf_fifo.so";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    // A link to itself: once an exception that ended the host on SIGHUP.
    std::string loop = dir / "serpens_nf_loop.so";
    std::filesystem::create_symlink("serpens_nf_loop.so", loop);
    PluginRegistry registry;
    registry.load_directory(dir.path().string()); // must not block on the FIFO
    CHECK(registry.find("noop") != nullptr);
    CHECK(registry.size() == 1);
    REQUIRE(refusal_for(registry, loop) != nullptr);
    const PluginRefusal *by_link = refusal_for(registry, link);
    const PluginRefusal *by_fifo = refusal_for(registry, fifo);
    REQUIRE(by_link != nullptr);
    REQUIRE(by_fifo != nullptr);
    CHECK(by_link->reason == RefusalReason::not_regular_file);
    CHECK(by_link->message.find("symbolic link") != std::string::npos);
    CHECK(by_fifo->reason == RefusalReason::not_regular_file);
}

TEST_CASE("loader refuses a shared object built for another machine")
{
    ScratchDir dir;
    install_plugin(dir, "noop");
    std::string image = read_bytes(serpens::test::built_plugin("noop2"));
    REQUIRE(image.size() > sizeof(Elf64_Ehdr));
    uint16_t machine = 0;
    std::memcpy(&machine, image.data() + offsetof(Elf64_Ehdr, e_machine), sizeof machine);
    uint16_t other = machine == EM_AARCH64 ? EM_X86_64 : EM_AARCH64;
    std::memcpy(image.data() + offsetof(Elf64_Ehdr, e_machine), &other, sizeof other);
    std::string other_machine = dir.write("serpens_nf_noop2.so", image);
    std::string class32 = image;
    class32[EI_CLASS] = ELFCLASS32;
    std::string other_class = dir.write("serpens_nf_noop3.so", class32);
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    CHECK(registry.size() == 1);
    const PluginRefusal *by_machine = refusal_for(registry, other_machine);
    const PluginRefusal *by_class = refusal_for(registry, other_class);
    REQUIRE(by_machine != nullptr);
    REQUIRE(by_class != nullptr);
    CHECK(by_machine->reason == RefusalReason::wrong_machine);
    CHECK_MESSAGE(by_machine->message.find("machine " + std::to_string(other)) != std::string::npos,
                  by_machine->message);
    CHECK(by_class->reason == RefusalReason::wrong_machine);
    CHECK(by_class->message.find("32-bit") != std::string::npos);
}

TEST_CASE("a plugin that stays mapped after unloading never stands in for the next one")
{
    // The dynamic linker knows it as /proc/self/fd/N; if N were reused, the
    // next dlopen of that name would return it instead of the new plugin.
    ScratchDir dir;
    std::string sticky = install_plugin(dir, "noop_nodelete");
    std::string next = install_plugin(dir, "noop2");
    {
        PluginRegistry registry;
        REQUIRE(registry.load_file(sticky));
    }
    PluginRegistry registry;
    REQUIRE(registry.load_file(next));
    REQUIRE(registry.find("noop2") != nullptr);
    CHECK(std::string(registry.find("noop2")->descriptor().name) == "noop2");
    CHECK(registry.find("noop_nodelete") == nullptr);
}

TEST_CASE("overwriting a loaded plugin's file leaves the running code alone")
{
    ScratchDir dir;
    std::string path = install_plugin(dir, "noop");
    PluginRegistry registry;
    REQUIRE(registry.load_file(path));
    const serpens_nf_descriptor &desc = registry.find("noop")->descriptor();

    // cp of a new build onto the loaded path, then a truncated copy: with
    // the file mapped, the first changes its code and the second SIGBUSes.
    overwrite_in_place(path, read_bytes(serpens::test::built_plugin("trace")));
    CHECK(std::string(desc.name) == "noop");
    CHECK(desc.init(nullptr, nullptr) == SERPENS_OK);
    overwrite_in_place(path, "half a plugin\n");
    CHECK(std::string(desc.name) == "noop");
    CHECK(std::string(desc.summary) == "passes packets on unchanged");
    CHECK(desc.init(nullptr, nullptr) == SERPENS_OK);
    desc.process(nullptr, nullptr);
    CHECK(registry.find("noop")->path() == path); // messages still name the file
}

TEST_CASE("loader refuses a plugin writable by group or others")
{
    ScratchDir dir;
    install_plugin(dir, "noop");
    std::string group = install_plugin(dir, "noop2", std::filesystem::perms(0775));
    std::string other = install_plugin(dir, "noop3", std::filesystem::perms(0757));
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    CHECK(registry.find("noop") != nullptr);
    CHECK(registry.find("noop2") == nullptr);
    CHECK(registry.find("noop3") == nullptr);
    for (const auto &path : {group, other}) {
        const PluginRefusal *refusal = refusal_for(registry, path);
        REQUIRE(refusal != nullptr);
        CHECK(refusal->reason == RefusalReason::insecure_permissions);
        CHECK(refusal->message.find("chmod go-w") != std::string::npos);
    }
}

TEST_CASE("loader reports an unreadable plugin directory")
{
    PluginRegistry registry;
    CHECK_THROWS_WITH_AS(registry.load_directory("/nonexistent/serpens-plugins"),
                         doctest::Contains("cannot read plugin directory /nonexistent/serpens-plugins"),
                         serpens::Error);
}
