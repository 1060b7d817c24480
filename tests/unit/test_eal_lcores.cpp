// The lcores read from [eal] args without starting DPDK: what --check places
// instances against.

#include "config/eal_lcores.h"
#include "core/error.h"

#include <doctest/doctest.h>

using namespace serpens;

namespace {

std::set<unsigned> ids(std::initializer_list<unsigned> list) { return std::set<unsigned>(list); }

LcoreSet read(const std::vector<std::string> &args) { return lcores_of_eal_args(args, "host.toml"); }

} // namespace

TEST_CASE("-l takes lists and ranges, attached or apart; the first is the main lcore")
{
    LcoreSet a = read({"-l", "0-2,5", "--no-huge"});
    CHECK(a.enabled == ids({0, 1, 2, 5}));
    CHECK(a.main == 0);
    CHECK(a.first_worker() == 1u);
    LcoreSet b = read({"--no-pci", "-l3"});
    CHECK(b.enabled == ids({3}));
    CHECK(b.main == 3);
    CHECK_FALSE(b.first_worker().has_value());
}

TEST_CASE("-c takes a hexadecimal mask, --lcores the lcore groups before each '@'")
{
    CHECK(read({"-c", "0x5"}).enabled == ids({0, 2}));
    CHECK(read({"-c", "30"}).enabled == ids({4, 5}));
    CHECK(read({"--lcores=(0-2)@1,4@(5,6),7"}).enabled == ids({0, 1, 2, 4, 7}));
    CHECK(read({"--lcores", "1,3"}).enabled == ids({1, 3}));
}

TEST_CASE("--main-lcore picks the main lcore; the others are workers")
{
    LcoreSet set = read({"-l", "0-3", "--main-lcore", "2"});
    CHECK(set.main == 2);
    CHECK(set.first_worker() == 0u);
    CHECK(read({"-l", "0-3", "--main-lcore=3"}).main == 3);
}

TEST_CASE("options that only start alike are not lcore options")
{
    LcoreSet set = read({"-l", "1", "--log-level=warning", "--lcores-bogus=9"});
    CHECK(set.enabled == ids({1}));
}

TEST_CASE("without an lcore option the EAL takes every CPU the process may use")
{
    LcoreSet set = read({"--no-huge"});
    CHECK_FALSE(set.enabled.empty());
    CHECK(set.has(set.main));
}

TEST_CASE("an unreadable list or a main lcore outside it is a config error naming [eal] args")
{
    CHECK_THROWS_WITH_AS(read({"-l", "0-x"}), doctest::Contains("host.toml: [eal] args: '0-x' is not a list"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(read({"-l", "3-1"}), doctest::Contains("range 3-1 is empty"), ConfigError);
    CHECK_THROWS_WITH_AS(read({"-l"}), doctest::Contains("'-l' needs a value"), ConfigError);
    CHECK_THROWS_WITH_AS(read({"-c", "0xg"}), doctest::Contains("not a hexadecimal core mask"), ConfigError);
    CHECK_THROWS_WITH_AS(read({"--lcores=(0-1@2"}), doctest::Contains("unbalanced parentheses"), ConfigError);
    CHECK_THROWS_WITH_AS(read({"-l", "0-1", "--main-lcore", "4"}),
                         doctest::Contains("--main-lcore 4 is not in the lcore list 0,1"), ConfigError);
    CHECK_THROWS_AS(read({"-l", "5000"}), ConfigError);
}
