// The plugin loader refuses each kind of bad plugin with a clear reason and
// keeps loading the others.

#include "support.h"

#include "core/error.h"
#include "plugin/registry.h"

#include <doctest/doctest.h>

#include <algorithm>

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
    std::string rel = dir.write("serpens_nf_rel.so", std::string("\x7f" "ELF\x02\x01\x01", 7) + std::string(9, '\0') +
                                                         std::string("\x01\x00", 2) + std::string(64, '\0'));
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

TEST_CASE("loader refuses unknown flags and a missing process callback")
{
    expect_refused("bad_flags", RefusalReason::invalid_descriptor, "unknown flag bits 0x80");
    expect_refused("bad_no_process", RefusalReason::invalid_descriptor, "no process callback");
}

TEST_CASE("loader refuses a second plugin with the same NF name")
{
    ScratchDir dir;
    std::string first = install_plugin(dir, "noop");
    std::string twin = install_plugin(dir, "noop_twin");
    PluginRegistry registry;
    registry.load_directory(dir.path().string());
    REQUIRE(registry.find("noop") != nullptr);
    CHECK(registry.find("noop")->path() == first); // sorted: serpens_nf_noop.so first
    const PluginRefusal *refusal = refusal_for(registry, twin);
    REQUIRE(refusal != nullptr);
    CHECK(refusal->reason == RefusalReason::duplicate_name);
    CHECK(refusal->message.find("already loaded from " + first) != std::string::npos);
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
