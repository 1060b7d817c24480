// The peer protocol's framing and validation: every message round-trips
// through encode_frame and decode_frame unchanged, and each kind of bad
// input a peer (or an attacker between peers) could send is refused with its
// own named error: truncated, oversized, empty, another version, no body,
// unparsable bytes, a field over its limit.

#include "core/error.h"
#include "peer/codec.h"

#include <doctest/doctest.h>

#include <google/protobuf/util/message_differencer.h>

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

using namespace serpens;
using namespace serpens::peer;

namespace {

std::span<const uint8_t> bytes_of(const std::string &s)
{
    return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

Envelope header(Envelope e)
{
    e.set_version(kProtocolVersion);
    e.set_request_id(42);
    e.set_in_reply_to(7);
    e.set_deadline_ms(1500);
    e.set_sequence(3);
    return e;
}

void set_entry(TableKey *entry, const std::string &nf, const std::string &table, const std::string &key)
{
    entry->set_chain("c");
    entry->set_nf(nf);
    entry->set_table(table);
    entry->set_key(key);
}

// One envelope of every body, each field set.
std::vector<Envelope> every_message()
{
    std::vector<Envelope> out;
    auto add = [&](auto fill) {
        Envelope e;
        fill(e);
        out.push_back(header(e));
    };
    add([](Envelope &e) {
        Hello *h = e.mutable_hello();
        h->set_protocol_version(kProtocolVersion);
        h->set_host_id("host-a.example");
        h->set_underlay_ipv4(0x0a000001);
        h->set_underlay_mac(std::string("\x02\x00\x00\x00\x00\x01", 6));
        h->set_vxlan_port(4789);
        h->set_incarnation(0x1234567890abcdefULL);
    });
    add([](Envelope &e) { e.mutable_heartbeat(); });
    add([](Envelope &e) {
        e.mutable_error()->set_code(Error_Code_CODE_REFUSED);
        e.mutable_error()->set_text("no capacity");
    });
    add([](Envelope &e) {
        e.mutable_scale_out_request()->set_chain("fw-mon-nat");
        e.mutable_scale_out_request()->set_instances(2);
        e.mutable_scale_out_request()->set_lease_ms(30000);
        ReadStateDigest *d = e.mutable_scale_out_request()->add_read_state();
        d->set_nf("ids");
        d->set_table("patterns");
        d->set_sha256(std::string(kDigestBytes, '\x5a'));
        d->set_entries(3);
        d->set_key_size(8);
        d->set_value_size(64);
    });
    add([](Envelope &e) {
        e.mutable_scale_out_accept()->set_chain("fw-mon-nat");
        e.mutable_scale_out_accept()->set_instances(1);
        e.mutable_scale_out_accept()->add_read_state_wanted()->set_nf("ids");
        e.mutable_scale_out_accept()->mutable_read_state_wanted(0)->set_table("patterns");
    });
    add([](Envelope &e) {
        StateCopies *m = e.mutable_state_copies();
        m->set_chain("fw-mon-nat");
        m->set_nf("ids");
        m->set_table("patterns");
        m->set_part(2);
        m->set_last(true);
        m->set_sha256(std::string(kDigestBytes, '\x01'));
        Entry *entry = m->add_entries();
        entry->set_key(std::string(8, 'k'));
        entry->set_value(std::string(64, 'v'));
    });
    add([](Envelope &e) { e.mutable_scale_out_ready()->set_chain("fw-mon-nat"); });
    add([](Envelope &e) {
        e.mutable_route_update()->set_chain("fw-mon-nat");
        e.mutable_route_update()->set_bucket_mask(std::string(32, '\x0f'));
        e.mutable_route_update()->set_peer("b");
    });
    add([](Envelope &e) {
        StateCopy *m = e.mutable_state_copy();
        set_entry(m->mutable_entry(), "fw", "rules", std::string("\x00\x01", 2));
        m->set_value(std::string(1000, 'v'));
    });
    add([](Envelope &e) {
        LeaseGrant *m = e.mutable_lease_grant();
        m->set_lease_id(9);
        set_entry(m->mutable_entry(), "nat", "pool", "k");
        m->set_value(std::string(8192, '\xff'));
        m->set_duration_ms(10000);
    });
    add([](Envelope &e) {
        e.mutable_lease_renew()->set_lease_id(9);
        e.mutable_lease_renew()->set_duration_ms(10000);
    });
    add([](Envelope &e) {
        e.mutable_lease_return()->set_lease_id(9);
        e.mutable_lease_return()->set_value(std::string(8192, '\x01'));
    });
    add([](Envelope &e) {
        ReplicaMerge *m = e.mutable_replica_merge();
        set_entry(m->mutable_entry(), "mon", "hosts", std::string(4, '\x0a'));
        m->set_delta(std::string(32, '\x02'));
        m->set_merge_sequence(77);
    });
    add([](Envelope &e) { e.mutable_scale_in()->set_chain("fw-mon-nat"); });
    add([](Envelope &e) {
        for (uint64_t seq = 1; seq <= 2; ++seq) {
            ReplicaMerge *m = e.mutable_replica_merges()->add_merges();
            set_entry(m->mutable_entry(), "mon", "hosts", std::string(4, static_cast<char>(seq)));
            m->set_delta(std::string(32, '\x02'));
            m->set_merge_sequence(77);
        }
    });
    add([](Envelope &e) { e.mutable_ack(); });
    add([](Envelope &e) {
        for (uint64_t id = 1; id <= 3; ++id) {
            LeaseGrant *g = e.mutable_lease_grants()->add_grants();
            g->set_lease_id(id);
            set_entry(g->mutable_entry(), "nat", "pool", std::string(8, static_cast<char>(id)));
            g->set_value(std::string(512, '\xff'));
            g->set_duration_ms(10000);
        }
    });
    add([](Envelope &e) {
        e.mutable_lease_renews()->add_renews()->set_lease_id(4);
        e.mutable_lease_renews()->add_renews()->set_lease_id(5);
    });
    add([](Envelope &e) {
        LeaseReturn *r = e.mutable_lease_returns()->add_returns();
        r->set_lease_id(4);
        r->set_value(std::string(512, '\x01'));
    });
    return out;
}

DecodeError error_of(const Decoded &d)
{
    REQUIRE(std::holds_alternative<DecodeFailure>(d));
    CHECK(!std::get<DecodeFailure>(d).message.empty());
    return std::get<DecodeFailure>(d).error;
}

// A frame around `payload` as it is, valid or not.
std::string raw_frame(const std::string &payload)
{
    const std::size_t n = payload.size();
    std::string f{static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                  static_cast<char>(n)};
    return f + payload;
}

std::string serialized(const Envelope &e)
{
    std::string out;
    REQUIRE(e.SerializeToString(&out));
    return out;
}

Envelope valid_ack()
{
    Envelope e;
    e.mutable_ack();
    return header(e);
}

} // namespace

TEST_CASE("every message round-trips through a frame unchanged")
{
    const std::vector<Envelope> all = every_message();
    // One per member of the oneof: a message added to peer.proto must be added here.
    CHECK(static_cast<int>(all.size()) == Envelope::descriptor()->oneof_decl(0)->field_count());
    for (const Envelope &e : all) {
        CAPTURE(body_name(e));
        const std::string frame = encode_frame(e);
        Decoded d = decode_frame(bytes_of(frame));
        REQUIRE(std::holds_alternative<Envelope>(d));
        CHECK(google::protobuf::util::MessageDifferencer::Equals(std::get<Envelope>(d), e));
        CHECK(body_name(std::get<Envelope>(d)) == body_name(e));
    }
}

TEST_CASE("a frame shorter than its header says is truncated; a longer one has trailing bytes")
{
    const std::string frame = encode_frame(valid_ack());
    for (std::size_t n = 0; n < frame.size(); ++n) {
        CAPTURE(n);
        CHECK(error_of(decode_frame(bytes_of(frame.substr(0, n)))) == DecodeError::truncated);
    }
    CHECK(error_of(decode_frame(bytes_of(frame + "x"))) == DecodeError::trailing);
}

TEST_CASE("a frame over the limit is refused from its header alone, and never sent")
{
    const uint8_t huge[4] = {0x00, 0x10, 0x00, 0x01}; // kMaxFrameBytes + 1
    static_assert(kMaxFrameBytes == 0x100000);
    auto length = frame_payload_length(std::span<const uint8_t, 4>(huge));
    REQUIRE(std::holds_alternative<DecodeFailure>(length));
    CHECK(std::get<DecodeFailure>(length).error == DecodeError::too_large);
    CHECK(error_of(decode_frame(std::span<const uint8_t>(huge, 4))) == DecodeError::too_large);
    const uint8_t all_ones[4] = {0xff, 0xff, 0xff, 0xff};
    CHECK(error_of(decode_frame(std::span<const uint8_t>(all_ones, 4))) == DecodeError::too_large);
    const uint8_t zero[4] = {0, 0, 0, 0};
    CHECK(error_of(decode_frame(std::span<const uint8_t>(zero, 4))) == DecodeError::empty);

    // The sender refuses before its peer has to: a value over its limit, and a frame over 1 MiB.
    Envelope e;
    set_entry(e.mutable_state_copy()->mutable_entry(), "n", "t", "k");
    e.mutable_state_copy()->set_value(std::string(kMaxValueBytes + 1, 'x'));
    CHECK_THROWS_AS(encode_frame(header(e)), serpens::Error);
}

TEST_CASE("another protocol version is refused, in the envelope and in the hello")
{
    Envelope e = valid_ack();
    e.set_version(kProtocolVersion + 1);
    CHECK(error_of(decode_frame(bytes_of(raw_frame(serialized(e))))) == DecodeError::wrong_version);
    e.set_version(0);
    CHECK(error_of(decode_frame(bytes_of(raw_frame(serialized(e))))) == DecodeError::wrong_version);

    Envelope hello = every_message().front();
    REQUIRE(hello.has_hello());
    hello.mutable_hello()->set_protocol_version(kProtocolVersion + 1);
    CHECK(error_of(decode_frame(bytes_of(raw_frame(serialized(hello))))) == DecodeError::wrong_version);
}

TEST_CASE("an envelope without a body, or with one this version does not know, is refused")
{
    Envelope e = header(Envelope());
    CHECK(error_of(decode_frame(bytes_of(raw_frame(serialized(e))))) == DecodeError::no_body);
    // Field 99, length-delimited: what a future version's new message looks like.
    const std::string future = serialized(e) + std::string("\x9a\x06\x00", 3);
    CHECK(error_of(decode_frame(bytes_of(raw_frame(future)))) == DecodeError::no_body);
}

TEST_CASE("a zero request id or sequence is refused")
{
    Envelope e = valid_ack();
    e.set_request_id(0);
    CHECK(error_of(decode_frame(bytes_of(raw_frame(serialized(e))))) == DecodeError::bad_header);
    e = valid_ack();
    e.set_sequence(0);
    CHECK(error_of(decode_frame(bytes_of(raw_frame(serialized(e))))) == DecodeError::bad_header);
}

TEST_CASE("bytes that are no protobuf are refused")
{
    for (const std::string &garbage : {std::string("\xff\xff\xff\xff\xff", 5), std::string("hello, world"),
                                       std::string("\x0a\x80", 2), std::string("\x52\x05\x12\x03", 4)}) {
        CAPTURE(garbage);
        CHECK(error_of(decode_frame(bytes_of(raw_frame(garbage)))) == DecodeError::bad_protobuf);
    }
    // A string field that is not UTF-8 (proto3 requires it).
    Envelope e = valid_ack();
    e.mutable_scale_in()->set_chain("x");
    std::string bytes = serialized(e);
    const std::size_t at = bytes.rfind('x');
    bytes[at] = '\xff';
    CHECK(error_of(decode_frame(bytes_of(raw_frame(bytes)))) == DecodeError::bad_protobuf);
}

TEST_CASE("fields over their limits or out of range are refused, naming the field")
{
    auto refused = [](Envelope e) {
        Decoded d = decode_frame(bytes_of(raw_frame(serialized(header(e)))));
        REQUIRE(std::holds_alternative<DecodeFailure>(d));
        return std::get<DecodeFailure>(d);
    };
    Envelope e;
    e.mutable_scale_in()->set_chain(std::string(kMaxNameBytes + 1, 'c'));
    DecodeFailure f = refused(e);
    CHECK(f.error == DecodeError::field_too_long);
    CHECK(f.message.find("scale_in.chain") != std::string::npos);

    e.mutable_scale_in()->set_chain("");
    CHECK(refused(e).error == DecodeError::bad_field);
    // A name goes into logs: a newline, an escape or a NUL would forge or cut a line.
    for (const std::string &forged :
         {std::string("x\n[error] FAKE"), std::string("b\0evil", 6), std::string("\x1b[31m")}) {
        Envelope h = every_message().front();
        h.mutable_hello()->set_host_id(forged);
        f = refused(h);
        CHECK(f.error == DecodeError::bad_field);
        CHECK(f.message.find("hello.host_id holds a control byte") != std::string::npos);
    }

    e.Clear();
    set_entry(e.mutable_replica_merge()->mutable_entry(), "n", "t", std::string(kMaxKeyBytes + 1, 'k'));
    f = refused(e);
    CHECK(f.error == DecodeError::field_too_long);
    CHECK(f.message.find("replica_merge.entry.key") != std::string::npos);
    e.mutable_replica_merge()->clear_entry();
    CHECK(refused(e).error == DecodeError::bad_field);

    e.Clear();
    Envelope hello = every_message().front();
    hello.mutable_hello()->set_underlay_mac("12345");
    CHECK(refused(hello).error == DecodeError::bad_field);
    hello = every_message().front();
    hello.mutable_hello()->set_vxlan_port(70000);
    CHECK(refused(hello).error == DecodeError::bad_field);

    e.mutable_lease_grant()->set_lease_id(0);
    CHECK(refused(e).error == DecodeError::bad_field);

    e.Clear();
    e.mutable_route_update()->set_chain("c");
    e.mutable_route_update()->set_peer("b");
    e.mutable_route_update()->set_bucket_mask(std::string(kMaxBucketMaskBytes + 1, '\xff'));
    CHECK(refused(e).error == DecodeError::field_too_long);

    e.Clear();
    e.mutable_scale_out_request()->set_chain("c");
    CHECK(refused(e).error == DecodeError::bad_field); // 0 instances
    e.mutable_scale_out_request()->set_instances(1);
    e.mutable_scale_out_request()->set_origin_tag(1u << 24); // does not fit the VXLAN header's 24 bits
    CHECK(refused(e).error == DecodeError::bad_field);

    // Global/read state: digests are SHA-256 (a last part must name one), names are present.
    e.Clear();
    e = every_message()[3];
    REQUIRE(e.has_scale_out_request());
    e.mutable_scale_out_request()->mutable_read_state(0)->set_sha256("short");
    CHECK(refused(e).message.find("scale_out_request.read_state.sha256") != std::string::npos);
    e.mutable_scale_out_request()->mutable_read_state(0)->set_sha256(std::string(kDigestBytes, 'x'));
    e.mutable_scale_out_request()->mutable_read_state(0)->set_key_size(0);
    CHECK(refused(e).error == DecodeError::bad_field);
    e.Clear();
    StateCopies *copy = e.mutable_state_copies();
    copy->set_chain("c");
    copy->set_nf("ids");
    copy->set_table("patterns");
    copy->set_last(true);
    CHECK(refused(e).message.find("state_copies.sha256") != std::string::npos);
    copy->set_sha256(std::string(kDigestBytes, 'x'));
    copy->add_entries()->set_key(std::string(kMaxKeyBytes + 1, 'k'));
    CHECK(refused(e).message.find("state_copies.entries.key") != std::string::npos);
    copy->clear_entries();
    copy->set_nf("");
    CHECK(refused(e).message.find("state_copies.nf") != std::string::npos);
    e.Clear();
    e.mutable_scale_out_accept()->set_chain("c");
    e.mutable_scale_out_accept()->add_read_state_wanted()->set_nf("ids");
    CHECK(refused(e).message.find("scale_out_accept.read_state_wanted.table") != std::string::npos);

    // Batches: each item is checked as the single message, and there are at most kMaxBatchItems.
    e.Clear();
    e.mutable_replica_merges()->add_merges()->set_delta("d"); // no entry
    CHECK(refused(e).message.find("replica_merges.merges.entry") != std::string::npos);
    e.Clear();
    e.mutable_lease_renews()->add_renews()->set_lease_id(3);
    e.mutable_lease_renews()->add_renews()->set_lease_id(0);
    CHECK(refused(e).message.find("lease_renews.renews") != std::string::npos);
    e.Clear();
    for (std::size_t i = 0; i <= kMaxBatchItems; ++i) {
        e.mutable_lease_renews()->add_renews()->set_lease_id(i + 1);
    }
    CHECK(refused(e).error == DecodeError::bad_field);
    e.Clear();
    LeaseGrant *g = e.mutable_lease_grants()->add_grants();
    g->set_lease_id(1);
    g->set_value("v"); // no entry
    CHECK(refused(e).message.find("lease_grants.grants.entry") != std::string::npos);
    e.Clear();
    LeaseReturn *r = e.mutable_lease_returns()->add_returns();
    r->set_lease_id(1);
    r->set_value(std::string(kMaxValueBytes + 1, 'x'));
    CHECK(refused(e).error == DecodeError::field_too_long);
}

TEST_CASE("every error has its own name")
{
    std::set<std::string> names;
#define SERPENS_PEER_COLLECT(name) names.insert(decode_error_name(DecodeError::name));
    SERPENS_PEER_DECODE_ERRORS(SERPENS_PEER_COLLECT)
#undef SERPENS_PEER_COLLECT
    CHECK(names.size() == 10);
    CHECK(names.count("unknown") == 0);
}
