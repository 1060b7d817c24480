// Global/read state following a chain onto a peer (app/read_state_copy.h):
// the owner's digests find the tables that differ on the peer, the peer
// takes a copy only whole, in order and with the announced digest, and then
// holds exactly the owner's entries.

#include "support.h"

#include "app/read_state_copy.h"
#include "core/error.h"
#include "peer/codec.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <string>

using namespace serpens;

namespace {

std::string word(uint32_t v) { return {reinterpret_cast<const char *>(&v), sizeof(v)}; }

// One host's state: chain "c", NF "n", global/read table "marks" (4-byte
// keys and values) holding `entries`, sealed as after the NF's init.
struct HostState {
    test::ScratchDir dir;
    state::StateStore store;
    state::Table *table = nullptr;

    explicit HostState(const std::map<uint32_t, uint32_t> &entries, uint32_t value_size = 4)
        : store([&] {
              state::StoreOptions o;
              o.root = dir.path();
              return o;
          }())
    {
        state::Executor &ex = store.executor("c", "n");
        std::string err;
        table = ex.create_table({"marks", SERPENS_STATE_GLOBAL | SERPENS_STATE_READ, 4, value_size, 16, 16}, err);
        REQUIRE_MESSAGE(table != nullptr, err);
        for (const auto &[k, v] : entries) {
            std::string value = word(v);
            value.resize(value_size);
            REQUIRE(table->put(&k, value.data()) == SERPENS_OK);
        }
        ex.seal();
    }
    std::map<std::string, std::string> entries() { return store.executor("c", "n").read_entries(*table); }
};

peer::StateCopies part(uint32_t number, const std::map<std::string, std::string> &entries, bool last,
                       const std::string &sha256 = "")
{
    peer::StateCopies p;
    p.set_chain("c");
    p.set_nf("n");
    p.set_table("marks");
    p.set_part(number);
    p.set_last(last);
    p.set_sha256(sha256);
    for (const auto &[k, v] : entries) {
        peer::Entry *entry = p.add_entries();
        entry->set_key(k);
        entry->set_value(v);
    }
    return p;
}

} // namespace

TEST_CASE("a peer whose global/read table differs takes the owner's, whole and checked")
{
    HostState owner({{0, 7}, {2, 8}, {3, 1}});
    HostState peer_host({{0, 9}, {1, 5}});
    const auto digests = digests_of(owner.store, "c");
    REQUIRE(digests.size() == 1);
    CHECK(digests[0].entries() == 3);
    CHECK(digests[0].sha256().size() == peer::kDigestBytes);
    google::protobuf::RepeatedPtrField<peer::ReadStateDigest> sent(digests.begin(), digests.end());

    auto differ = tables_that_differ(peer_host.store, "c", sent);
    REQUIRE(differ.size() == 1);
    CHECK(differ[0].nf() == "n");
    CHECK(differ[0].table() == "marks");
    // The same content, wherever it came from, is not copied again.
    CHECK(tables_that_differ(owner.store, "c", sent).empty());

    ReadStateReceiver receiver(peer_host.store);
    const auto whole = owner.entries();
    const std::string sha = read_state_sha256(whole);
    std::map<std::string, std::string> first(whole.begin(), std::next(whole.begin()));
    std::map<std::string, std::string> rest(std::next(whole.begin()), whole.end());

    SUBCASE("in two parts")
    {
        CHECK(receiver.take("a", part(0, first, false)).has_ack());
        CHECK(peer_host.entries() != whole); // nothing changes before the last part
        CHECK(receiver.take("a", part(1, rest, true, sha)).has_ack());
        CHECK(peer_host.entries() == whole);
        CHECK(tables_that_differ(peer_host.store, "c", sent).empty());
    }
    SUBCASE("a part out of order is refused, and the copy starts over from part 0")
    {
        const peer::Envelope skipped = receiver.take("a", part(1, rest, true, sha));
        REQUIRE(skipped.has_error());
        CHECK(skipped.error().code() == peer::Error::CODE_BAD_REQUEST);
        CHECK(receiver.take("a", part(0, first, false)).has_ack());
        CHECK(receiver.take("a", part(2, rest, true, sha)).has_error());
        CHECK(receiver.take("a", part(1, rest, true, sha)).has_error()); // the failure dropped what had come
        CHECK(receiver.take("a", part(0, whole, true, sha)).has_ack());
        CHECK(peer_host.entries() == whole);
    }
    SUBCASE("what came must have the announced digest")
    {
        const auto before = peer_host.entries();
        auto tampered = whole;
        tampered.begin()->second = word(200);
        const peer::Envelope refused = receiver.take("a", part(0, tampered, true, sha));
        REQUIRE(refused.has_error());
        CHECK(refused.error().text().find("digest") != std::string::npos);
        CHECK(peer_host.entries() == before);
    }
    SUBCASE("an entry of another size or an unknown table is refused")
    {
        std::map<std::string, std::string> odd{{word(0), std::string(5, 'v')}};
        CHECK(receiver.take("a", part(0, odd, true, read_state_sha256(odd))).error().code() ==
              peer::Error::CODE_BAD_REQUEST);
        peer::StateCopies unknown = part(0, whole, true, sha);
        unknown.set_table("other");
        CHECK(receiver.take("a", unknown).error().code() == peer::Error::CODE_UNKNOWN);
    }
}

TEST_CASE("a peer whose chain has not the owner's global/read tables refuses the scale-out")
{
    HostState owner(std::map<uint32_t, uint32_t>{{0, 7}});
    const auto digests = digests_of(owner.store, "c");
    google::protobuf::RepeatedPtrField<peer::ReadStateDigest> sent(digests.begin(), digests.end());

    HostState wider(std::map<uint32_t, uint32_t>{{0, 7}}, 8);
    CHECK_THROWS_WITH_AS(tables_that_differ(wider.store, "c", sent), doctest::Contains("values of 8 bytes here"),
                         Error);
    CHECK_THROWS_WITH_AS(tables_that_differ(owner.store, "other-chain", sent),
                         doctest::Contains("has no global/read table 'marks'"), Error);
}
