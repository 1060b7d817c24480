// The control protocol's requests: every command serpensctl sends, and every
// way a request can be wrong (not JSON, wrong version, unknown command or
// field, mistyped or out-of-range values, junk bytes).

#include "control/request.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace serpens;

namespace {

ControlRequest accepted(std::string_view line)
{
    ParsedControlRequest parsed = parse_control_request(line);
    const auto *request = std::get_if<ControlRequest>(&parsed);
    INFO("line: '", std::string(line), "'");
    if (const auto *error = std::get_if<ControlRequestError>(&parsed)) {
        INFO("refused: ", error->message);
    }
    REQUIRE(request != nullptr);
    return *request;
}

ControlRequestError refused(std::string_view line)
{
    ParsedControlRequest parsed = parse_control_request(line);
    const auto *error = std::get_if<ControlRequestError>(&parsed);
    INFO("line: '", std::string(line), "'");
    REQUIRE(error != nullptr);
    CHECK(!error->message.empty());
    return *error;
}

std::string with_version(const std::string &body) { return "{\"v\":1," + body + "}"; }

} // namespace

TEST_CASE("the commands serpensctl sends, each a JSON object naming version 1")
{
    struct Case {
        const char *cmd;
        ControlVerb verb;
    };
    for (const Case &c :
         {Case{"ping", ControlVerb::ping}, Case{"version", ControlVerb::version}, Case{"status", ControlVerb::status},
          Case{"stats", ControlVerb::stats}, Case{"chains", ControlVerb::chains}, Case{"plugins", ControlVerb::plugins},
          Case{"instances", ControlVerb::instances}, Case{"clear", ControlVerb::clear},
          Case{"wake_threshold", ControlVerb::wake_threshold}, Case{"log_level", ControlVerb::log_level}}) {
        CAPTURE(c.cmd);
        CHECK(accepted(with_version("\"cmd\":\"" + std::string(c.cmd) + "\"")).verb == c.verb);
    }
    CHECK(accepted(R"({"cmd":"ping","v":1})").verb == ControlVerb::ping); // any field order
    CHECK(accepted(" {\"v\":1,\"cmd\":\"ping\"} \r").verb == ControlVerb::ping);
}

TEST_CASE("reads change nothing; clear, scale and the setters do")
{
    CHECK_FALSE(changes_host(accepted(R"({"v":1,"cmd":"stats"})")));
    CHECK_FALSE(changes_host(accepted(R"({"v":1,"cmd":"wake_threshold"})")));
    CHECK_FALSE(changes_host(accepted(R"({"v":1,"cmd":"log_level"})")));
    CHECK(changes_host(accepted(R"({"v":1,"cmd":"wake_threshold","set":7})")));
    CHECK(changes_host(accepted(R"({"v":1,"cmd":"log_level","set":"debug"})")));
    CHECK(changes_host(accepted(R"({"v":1,"cmd":"clear"})")));
}

TEST_CASE("a request that is not a version-1 object is refused with the right code")
{
    for (const char *bad : {"", "   ", "ping", "[1,2]", "\"ping\"", "{", "{\"v\":1,\"cmd\":\"ping\"", "null", "7"}) {
        CAPTURE(bad);
        const ControlRequestError e = refused(bad);
        CHECK(e.code == ControlErrorCode::bad_request);
        CHECK(e.message.find("one JSON object") != std::string::npos);
    }
    CHECK(refused(R"({"cmd":"ping"})").code == ControlErrorCode::unsupported_version);
    CHECK(refused(R"({"v":2,"cmd":"ping"})").code == ControlErrorCode::unsupported_version);
    CHECK(refused(R"({"v":"1","cmd":"ping"})").code == ControlErrorCode::unsupported_version);
    CHECK(refused(R"({"v":1})").code == ControlErrorCode::bad_request);
    CHECK(refused(R"({"v":1,"cmd":7})").code == ControlErrorCode::bad_request);
    const ControlRequestError unknown = refused(R"({"v":1,"cmd":"reboot"})");
    CHECK(unknown.code == ControlErrorCode::unknown_command);
    CHECK(unknown.message.find("'reboot'") != std::string::npos);
    CHECK(unknown.message.find("status") != std::string::npos); // names the commands
    CHECK(refused(R"({"v":1,"cmd":"PING"})").code == ControlErrorCode::unknown_command);
}

TEST_CASE("a field the command does not take is refused, never ignored")
{
    CHECK(refused(R"({"v":1,"cmd":"stats","watch":1})").message.find("'watch'") != std::string::npos);
    CHECK(refused(R"({"v":1,"cmd":"ping","set":1})").code == ControlErrorCode::bad_request);
    CHECK(refused(R"({"v":1,"cmd":"scale","chain":"c","count":1,"lcore":[1]})").message.find("lcores") !=
          std::string::npos);
}

TEST_CASE("wake_threshold's range is 1..1048576")
{
    CHECK(accepted(R"({"v":1,"cmd":"wake_threshold","set":1})").set_threshold == 1u);
    CHECK(accepted(R"({"v":1,"cmd":"wake_threshold","set":1048576})").set_threshold == 1048576u);
    CHECK_FALSE(accepted(R"({"v":1,"cmd":"wake_threshold"})").set_threshold.has_value());
    CHECK(refused(R"({"v":1,"cmd":"wake_threshold","set":0})").message.find("1..1048576") != std::string::npos);
    for (const char *bad : {"1048577", "-3", "\"7\"", "7.5", "null", "[7]", "99999999999999999999999", "1e3"}) {
        CAPTURE(bad);
        CHECK(refused(with_version("\"cmd\":\"wake_threshold\",\"set\":" + std::string(bad))).code ==
              ControlErrorCode::bad_request);
    }
}

TEST_CASE("log_level takes the levels host.toml takes")
{
    CHECK(accepted(R"({"v":1,"cmd":"log_level","set":"debug"})").set_level == "debug");
    CHECK(accepted(R"({"v":1,"cmd":"log_level","set":"off"})").set_level == "off");
    for (const char *bad : {"\"loud\"", "\"DEBUG\"", "3", "null", "\"\""}) {
        CAPTURE(bad);
        CHECK(refused(with_version("\"cmd\":\"log_level\",\"set\":" + std::string(bad))).message.find("trace, debug") !=
              std::string::npos);
    }
}

TEST_CASE("a hostile request is echoed short and printable")
{
    std::string huge = with_version("\"cmd\":\"" + std::string(100000, 'A') + "\"");
    CHECK(refused(huge).message.size() < 300);
    std::string junk = std::string("x\x01\x1b[2J", 6) + '\0' + "\xff";
    for (char c : refused(junk).message) {
        CHECK((c >= 0x20 && c < 0x7f));
    }
    for (char c : refused(with_version("\"cmd\":\"\\u0001\\u001b[2J\"")).message) {
        CHECK((c >= 0x20 && c < 0x7f));
    }
}

TEST_CASE("scale: a chain, N, +K or -K, and optionally the lcores new instances may use")
{
    ControlRequest to = accepted(R"({"v":1,"cmd":"scale","chain":"fw-mon-nat","count":3})");
    CHECK(to.verb == ControlVerb::scale);
    CHECK(to.chain == "fw-mon-nat");
    CHECK((to.value == 3 && !to.relative));
    CHECK(changes_host(to));
    CHECK(accepted(R"({"v":1,"cmd":"scale","chain":"c","count":"3"})").value == 3);
    ControlRequest up = accepted(R"({"v":1,"cmd":"scale","chain":"c","count":"+2","lcores":[1,3,4]})");
    CHECK((up.relative && !up.negative && up.value == 2));
    CHECK(up.lcores == std::vector<unsigned>{1, 3, 4});
    ControlRequest down = accepted(R"({"v":1,"cmd":"scale","chain":"c","count":"-1"})");
    CHECK((down.relative && down.negative && down.value == 1));
    CHECK(accepted(R"({"v":1,"cmd":"scale","chain":"c","count":0})").value == 0); // to zero: the chain parks
    for (const char *bad :
         {R"("chain":"c")", R"("count":1)", R"("chain":"c","count":"x")", R"("chain":"c","count":"++1")",
          R"("chain":"c","count":1025)", R"("chain":"c","count":-1)", R"("chain":"c","count":"-")",
          R"("chain":"c","count":1.5)", R"("chain":"c","count":1,"lcores":1)",
          R"("chain":"c","count":1,"lcores":[1024])", R"("chain":"c","count":1,"lcores":["1"])",
          R"("chain":"../x","count":1)", R"("chain":7,"count":1)", R"("chain":"c","count":"99999999999999999999")"}) {
        CAPTURE(bad);
        CHECK(refused(with_version("\"cmd\":\"scale\"," + std::string(bad))).code == ControlErrorCode::bad_request);
    }
    std::string many = R"({"v":1,"cmd":"scale","chain":"c","count":1,"lcores":[)";
    for (int i = 0; i < 300; ++i) {
        many += (i == 0 ? "" : ",") + std::to_string(i % 8);
    }
    CHECK(refused(many + "]}").message.find("at most 256") != std::string::npos);
    // A hostile chain name is not echoed raw.
    CHECK(refused(R"({"v":1,"cmd":"scale","chain":"\u0001\u0002","count":1})").message.find('\x01') ==
          std::string::npos);
}

TEST_CASE("scale on a peer: +1 or -1, a peer's id, no lcores")
{
    ControlRequest out = accepted(R"({"v":1,"cmd":"scale","chain":"c","count":"+1","peer":"host-b"})");
    CHECK((out.peer == "host-b" && out.relative && !out.negative && out.value == 1));
    CHECK(changes_host(out));
    ControlRequest in = accepted(R"({"v":1,"cmd":"scale","chain":"c","count":"-1","peer":"host-b"})");
    CHECK((in.peer == "host-b" && in.negative));
    CHECK(accepted(R"({"v":1,"cmd":"scale","chain":"c","count":"+1"})").peer.empty());
    for (const char *bad : {R"("chain":"c","count":"+2","peer":"b")", R"("chain":"c","count":1,"peer":"b")",
                            R"("chain":"c","count":"-3","peer":"b")", R"("chain":"c","count":"+1","peer":"../b")",
                            R"("chain":"c","count":"+1","peer":7)", R"("chain":"c","count":"+1","peer":"")",
                            R"("chain":"c","count":"+1","peer":"b","lcores":[1])"}) {
        CAPTURE(bad);
        CHECK(refused(with_version("\"cmd\":\"scale\"," + std::string(bad))).code == ControlErrorCode::bad_request);
    }
}

TEST_CASE("deep nesting, a field given twice and a NUL byte are refused, not acted on")
{
    // 20000 brackets in a field that errors echo: once a stack overflow of
    // the control thread, which took the host down.
    const std::string deep = std::string(20000, '[') + std::string(20000, ']');
    for (const char *field : {"v", "chain", "lcores"}) {
        CAPTURE(field);
        const std::string line = R"({"cmd":"scale",")" + std::string(field) + "\":" + deep + ",\"v\":1}";
        const ControlRequestError e = refused(line);
        CHECK(e.code == ControlErrorCode::bad_request);
        CHECK(e.message.find("nests") != std::string::npos);
    }
    // Lists of scalars, as serpensctl sends, still pass.
    CHECK(accepted(R"({"v":1,"cmd":"scale","chain":"c","count":"+1","lcores":[1,2]})").lcores.size() == 2);

    const ControlRequestError twice = refused(R"({"v":1,"cmd":"ping","cmd":"clear"})");
    CHECK(twice.message.find("'cmd' is given twice") != std::string::npos);
    CHECK(refused(std::string(R"({"v":1,"cmd":"ping"})") + '\0' + "garbage").message.find("NUL") != std::string::npos);
}

TEST_CASE("bill: optionally from a Unix time, optionally one chain")
{
    ControlRequest all = accepted(R"({"v":1,"cmd":"bill"})");
    CHECK(all.verb == ControlVerb::bill);
    CHECK_FALSE(all.since.has_value());
    CHECK(all.chain.empty());
    CHECK_FALSE(changes_host(all));
    ControlRequest some = accepted(R"({"v":1,"cmd":"bill","since":1796300000,"chain":"fw-nat"})");
    CHECK(some.since == 1796300000);
    CHECK(some.chain == "fw-nat");
    // The latest second the system clock holds (2262-04-11).
    CHECK(accepted(R"({"v":1,"cmd":"bill","since":9223372036})").since == 9223372036);
    for (const char *bad :
         {R"("since":-1)", R"("since":"yesterday")", R"("since":1.5)", R"("since":1e20)", R"("since":9223372037)",
          R"("since":253402300799)", R"("chain":"../x")", R"("chain":5)", R"("until":5)"}) {
        CAPTURE(bad);
        CHECK(refused(with_version("\"cmd\":\"bill\"," + std::string(bad))).code == ControlErrorCode::bad_request);
    }
}

TEST_CASE("reload: optionally the chains to swap though unchanged")
{
    ControlRequest plain = accepted(R"({"v":1,"cmd":"reload"})");
    CHECK(plain.verb == ControlVerb::reload);
    CHECK(plain.chains.empty());
    CHECK(changes_host(plain));
    ControlRequest forced = accepted(R"({"v":1,"cmd":"reload","chains":["fw-nat","c"]})");
    CHECK(forced.chains == std::vector<std::string>{"fw-nat", "c"});
    std::string many = R"("chains":[)";
    for (std::size_t i = 0; i <= kMaxReloadChains; ++i) {
        many += (i == 0 ? "\"c" : ",\"c") + std::to_string(i) + "\"";
    }
    many += "]";
    for (const std::string &bad : {std::string(R"("chains":"c")"), std::string(R"("chains":["../x"])"),
                                   std::string(R"("chains":[5])"), std::string(R"("chain":"c")"), many}) {
        CAPTURE(bad);
        CHECK(refused(with_version("\"cmd\":\"reload\"," + bad)).code == ControlErrorCode::bad_request);
    }
}

TEST_CASE("drain: lcores to drain, --undo, or nothing to list")
{
    ControlRequest list = accepted(R"({"v":1,"cmd":"drain"})");
    CHECK(list.verb == ControlVerb::drain);
    CHECK_FALSE(changes_host(list));
    ControlRequest some = accepted(R"({"v":1,"cmd":"drain","lcores":[2,3]})");
    CHECK(some.lcores == std::vector<unsigned>{2, 3});
    CHECK(changes_host(some));
    ControlRequest undo = accepted(R"({"v":1,"cmd":"drain","undo":true})");
    CHECK(undo.undo);
    CHECK(changes_host(undo));
    for (const char *bad :
         {R"("lcores":2)", R"("lcores":[-1])", R"("lcores":[1024])", R"("undo":1)", R"("lcore":[2])"}) {
        CAPTURE(bad);
        CHECK(refused(with_version("\"cmd\":\"drain\"," + std::string(bad))).code == ControlErrorCode::bad_request);
    }
}

TEST_CASE("peers: a read that takes no field")
{
    ControlRequest peers = accepted(R"({"v":1,"cmd":"peers"})");
    CHECK(peers.verb == ControlVerb::peers);
    CHECK_FALSE(changes_host(peers));
    CHECK(refused(R"({"v":1,"cmd":"peers","peer":"b"})").code == ControlErrorCode::bad_request);
}

TEST_CASE("replies: an envelope with the version, ok, and a result or a coded error")
{
    const auto ok = nlohmann::json::parse(control_ok_reply({{"pong", true}}));
    CHECK(ok == nlohmann::json{{"v", 1}, {"ok", true}, {"result", {{"pong", true}}}});
    const auto error = nlohmann::json::parse(control_error_reply(ControlErrorCode::not_found, "no chain 'x'"));
    CHECK(error["ok"] == false);
    CHECK(error["error"]["code"] == "not_found");
    CHECK(error["error"]["message"] == "no chain 'x'");
    // Names from configs and plugins may be invalid UTF-8: replaced, never thrown.
    CHECK_NOTHROW(nlohmann::json::parse(control_ok_reply({{"name", "bad\xff"}})));
}
