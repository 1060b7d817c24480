// The control protocol's parser: every command serpensctl sends, and every
// way a line can be wrong (range, sign, trailing words, junk bytes).

#include "control/request.h"

#include <doctest/doctest.h>

#include <string>

using namespace serpens;

namespace {

ControlRequest accepted(std::string_view line)
{
    ParsedControlRequest parsed = parse_control_request(line);
    const auto *request = std::get_if<ControlRequest>(&parsed);
    INFO("line: '", std::string(line), "'");
    REQUIRE(request != nullptr);
    return *request;
}

std::string refused(std::string_view line)
{
    ParsedControlRequest parsed = parse_control_request(line);
    const auto *error = std::get_if<ControlRequestError>(&parsed);
    INFO("line: '", std::string(line), "'");
    REQUIRE(error != nullptr);
    CHECK(error->message.rfind("error: ", 0) == 0);
    return error->message;
}

} // namespace

TEST_CASE("the commands serpensctl sends")
{
    CHECK(accepted("ping").verb == ControlVerb::ping);
    CHECK(accepted("stats").verb == ControlVerb::stats);
    CHECK(accepted("get wake_threshold").verb == ControlVerb::get_wake_threshold);
    ControlRequest set = accepted("set wake_threshold 512");
    CHECK(set.verb == ControlVerb::set_wake_threshold);
    CHECK(set.value == 512);
    CHECK(changes_host(set));
    CHECK_FALSE(changes_host(accepted("stats")));
    CHECK_FALSE(changes_host(accepted("get wake_threshold")));
}

TEST_CASE("spaces, tabs and a carriage return around words are tolerated")
{
    CHECK(accepted("  ping  ").verb == ControlVerb::ping);
    CHECK(accepted("stats\r").verb == ControlVerb::stats);
    CHECK(accepted("set\twake_threshold \t 7\r").value == 7);
}

TEST_CASE("wake_threshold's range is 1..1048576")
{
    CHECK(accepted("set wake_threshold 1").value == 1);
    CHECK(accepted("set wake_threshold 1048576").value == 1048576);
    CHECK(refused("set wake_threshold 0").find("1..1048576") != std::string::npos);
    refused("set wake_threshold 1048577");
    refused("set wake_threshold -3");
    refused("set wake_threshold +3");
    refused("set wake_threshold 99999999999999999999999");
    refused("set wake_threshold 0x10");
    refused("set wake_threshold 12abc");
    refused("set wake_threshold");
}

TEST_CASE("trailing words are refused, not ignored")
{
    refused("ping pong");
    refused("stats now");
    refused("get wake_threshold please");
    refused("set wake_threshold 5 6");
    refused("set wake_threshold 5 ; rm -rf /");
}

TEST_CASE("unknown and empty lines name the commands")
{
    CHECK(refused("").find("commands: ping") != std::string::npos);
    CHECK(refused("   ").find("empty") != std::string::npos);
    CHECK(refused("reboot").find("unknown command 'reboot'") != std::string::npos);
    refused("get");
    refused("set");
    refused("get other_knob");
    refused("PING"); // commands are case-sensitive, as they always were
}

TEST_CASE("a hostile line is echoed short and printable")
{
    std::string huge(100000, 'A');
    std::string reply = refused(huge);
    CHECK(reply.size() < 300);
    std::string junk = std::string("x\x01\x1b[2J", 6) + '\0' + "\xff";
    reply = refused(junk);
    for (char c : reply) {
        CHECK((c >= 0x20 && c < 0x7f));
    }
}

TEST_CASE("scale: a chain, N, +K or -K, and optionally the lcores new instances may use")
{
    ControlRequest to = accepted("scale fw-mon-nat 3");
    CHECK(to.verb == ControlVerb::scale);
    CHECK(to.chain == "fw-mon-nat");
    CHECK((to.value == 3 && !to.relative));
    CHECK(changes_host(to));
    ControlRequest up = accepted("scale c +2 1,3,4");
    CHECK((up.relative && !up.negative && up.value == 2));
    CHECK(up.lcores == std::vector<unsigned>{1, 3, 4});
    ControlRequest down = accepted("scale c -1");
    CHECK((down.relative && down.negative && down.value == 1));
    CHECK(accepted("scale c 0").value == 0); // to zero: the chain parks
    for (const char *bad : {"scale", "scale c", "scale c x", "scale c 1 2 3", "scale c ++1", "scale c 1025",
                            "scale c 1 1,", "scale c 1 ,1", "scale c 1 1024", "scale c 1 a,b", "scale ../x 1",
                            "scale c -", "scale c 99999999999999999999"}) {
        CAPTURE(bad);
        CHECK(refused(bad).rfind("error: ", 0) == 0);
    }
    // A hostile chain name is not echoed raw.
    CHECK(refused("scale \x01\x02 1").find('\x01') == std::string::npos);
}
