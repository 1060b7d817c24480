// The usage ledger behind `serpensctl bill`: rows survive a reopen, a torn
// last line (a host killed mid-write) costs that line only, old rows fold
// into hours without changing any total, and "since" picks rows by their end.

#include "core/error.h"
#include "metering/ledger.h"
#include "support.h"

#include <doctest/doctest.h>

#include <csignal>
#include <fstream>

#include <sys/resource.h>

using namespace serpens::metering;

namespace {

Row row(int64_t from, int64_t to, const std::string &chain, uint64_t packets)
{
    Row r;
    r.from_s = from;
    r.to_s = to;
    r.chain = chain;
    r.used.packets = packets;
    r.used.bytes = packets * 100;
    r.used.instance_s = static_cast<double>(to - from);
    r.used.nfs["fw"] = {packets, packets * 100, 1, static_cast<double>(to - from), 0.25};
    return r;
}

} // namespace

TEST_CASE("rows written are read back by the next host")
{
    serpens::test::ScratchDir dir;
    const std::filesystem::path path =
        std::filesystem::path(dir / "state") / "usage.jsonl"; // its directory is made too
    {
        Ledger ledger(path);
        ledger.record({row(1000, 1001, "a", 10)});
        ledger.record({row(1001, 1002, "a", 5)});
        ledger.record({row(1001, 1002, "b", 7)});
    }
    Ledger again(path);
    CHECK(again.rows() == 3);
    const auto bill = again.bill(std::nullopt);
    CHECK(bill.at("a").packets == 15);
    CHECK(bill.at("a").bytes == 1500);
    CHECK(bill.at("a").nfs.at("fw").packets == 15);
    CHECK(bill.at("a").nfs.at("fw").dropped == 2);
    CHECK(bill.at("b").packets == 7);
    CHECK(again.bill(std::nullopt, "b").count("a") == 0);
    CHECK(again.first_s() == 1000);
}

TEST_CASE("a torn last line is dropped and cut off, and the next row starts a line of its own")
{
    serpens::test::ScratchDir dir;
    const std::filesystem::path path = dir / "usage.jsonl";
    {
        Ledger ledger(path);
        ledger.record({row(1000, 1001, "a", 10)});
    }
    {
        std::ofstream torn(path, std::ios::app);
        torn << R"({"from":1001,"to":1002,"chain":"a","pack)";
    }
    {
        Ledger ledger(path);
        CHECK(ledger.skipped() == 1);
        CHECK(ledger.rows() == 1);
        ledger.record({row(1002, 1003, "a", 3)});
    }
    Ledger again(path);
    CHECK(again.skipped() == 0);
    CHECK(again.bill(std::nullopt).at("a").packets == 13);
}

TEST_CASE("a sample's rows are written all or none, so a retry after a full filesystem bills nothing twice")
{
    serpens::test::ScratchDir dir;
    const std::filesystem::path path = dir / "usage.jsonl";
    Ledger ledger(path);
    ledger.record({row(1000, 1001, "a", 10)});
    const auto size = std::filesystem::file_size(path);
    {
        // A file size limit stands in for a full filesystem: the write stops
        // part way through the second row (EFBIG instead of ENOSPC).
        struct rlimit old_limit {};
        REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
        const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
        struct rlimit small = old_limit;
        small.rlim_cur = size + row_line(row(1001, 1002, "a", 5)).size() + 20;
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
        CHECK_THROWS_WITH_AS(ledger.record({row(1001, 1002, "a", 5), row(1001, 1002, "b", 7)}),
                             doctest::Contains("cannot append to the usage ledger"), serpens::Error);
        REQUIRE(::setrlimit(RLIMIT_FSIZE, &old_limit) == 0);
        std::signal(SIGXFSZ, old_handler);
    }
    CHECK(std::filesystem::file_size(path) == size);
    CHECK(ledger.rows() == 1);
    // The meter's next try: the same interval, whole.
    ledger.record({row(1001, 1003, "a", 8), row(1001, 1003, "b", 9)});
    Ledger again(path);
    CHECK(again.skipped() == 0);
    CHECK(again.bill(std::nullopt).at("a").packets == 18);
    CHECK(again.bill(std::nullopt).at("b").packets == 9);
}

TEST_CASE("compaction folds rows older than an hour into hours and keeps every total")
{
    serpens::test::ScratchDir dir;
    const std::filesystem::path path = dir / "usage.jsonl";
    const int64_t now = 100 * 3600 + 1800;
    Ledger ledger(path);
    for (int64_t t = now - 3 * 3600; t < now; t += 10) {
        ledger.record({row(t, t + 10, "a", 2)});
    }
    const auto before = ledger.bill(std::nullopt).at("a");
    const std::size_t rows_before = ledger.rows();
    // A rewrite that fails (here its temporary file cannot be made) leaves
    // the book and the file as they were.
    std::filesystem::create_directory(path.string() + ".tmp");
    CHECK_THROWS_WITH_AS(ledger.compact(now), doctest::Contains("cannot compact the usage ledger"), serpens::Error);
    std::filesystem::remove(path.string() + ".tmp");
    CHECK(ledger.rows() == rows_before);
    CHECK(ledger.bill(std::nullopt).at("a").packets == before.packets);
    CHECK(ledger.bill(std::nullopt).at("a").nfs.at("fw").packets == before.nfs.at("fw").packets);
    ledger.compact(now);
    CHECK(ledger.rows() < rows_before / 2);
    const auto after = ledger.bill(std::nullopt).at("a");
    CHECK(after.packets == before.packets);
    CHECK(after.bytes == before.bytes);
    CHECK(after.instance_s == doctest::Approx(before.instance_s));
    CHECK(after.nfs.at("fw").packets == before.nfs.at("fw").packets);
    // The last hour keeps its seconds: "since" 10 minutes ago is exact.
    CHECK(ledger.bill(now - 600).at("a").packets == 2 * 60);
    // What is on disk is what the book holds.
    Ledger reread(path);
    CHECK(reread.rows() == ledger.rows());
    CHECK(reread.bill(std::nullopt).at("a").packets == before.packets);
}

TEST_CASE("a line that is not a row is skipped, never trusted")
{
    CHECK_FALSE(parse_row("").has_value());
    CHECK_FALSE(parse_row("[1,2]").has_value());
    CHECK_FALSE(parse_row(R"({"from":"x","to":1,"chain":"a"})").has_value());
    const auto r = parse_row(R"({"from":1,"to":2,"chain":"a","packets":-5,"bytes":"9","nfs":{"fw":3}})");
    REQUIRE(r.has_value());
    CHECK(r->used.packets == 0); // a negative or mistyped count is not believed
    CHECK(r->used.bytes == 0);
    CHECK(r->used.nfs.empty());
    const Row back = *parse_row(row_line(row(5, 6, "c", 4)));
    CHECK(back.used.packets == 4);
    CHECK(back.used.nfs.at("fw").bytes == 400);
    CHECK(back.used.nfs.at("fw").instance_s == doctest::Approx(1.0));
    CHECK(back.used.nfs.at("fw").busy_s == doctest::Approx(0.25));
}
