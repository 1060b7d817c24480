#include "peer/codec.h"

#include "core/error.h"

#include <cstdio>
#include <limits>

namespace serpens::peer {
namespace {

DecodeFailure failure(DecodeError error, std::string message) { return DecodeFailure{error, std::move(message)}; }

// A name every message needs: present and short.
std::optional<DecodeFailure> check_name(std::string_view field, const std::string &value)
{
    if (value.empty()) {
        return failure(DecodeError::bad_field, std::string(field) + " is empty");
    }
    if (value.size() > kMaxNameBytes) {
        return failure(DecodeError::field_too_long, std::string(field) + " has " + std::to_string(value.size()) +
                                                        " bytes, more than " + std::to_string(kMaxNameBytes));
    }
    // Names go into logs and messages: a newline, an escape or a NUL from a
    // peer would forge or cut a line there.
    for (const char ch : value) {
        const auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02x", c);
            return failure(DecodeError::bad_field, std::string(field) + " holds a control byte (" + hex + ")");
        }
    }
    return std::nullopt;
}

std::optional<DecodeFailure> check_size(std::string_view field, const std::string &value, std::size_t limit)
{
    if (value.size() > limit) {
        return failure(DecodeError::field_too_long, std::string(field) + " has " + std::to_string(value.size()) +
                                                        " bytes, more than " + std::to_string(limit));
    }
    return std::nullopt;
}

// The entry and the value (or delta) of the state messages.
template<typename Msg>
std::optional<DecodeFailure> check_state_entry(std::string_view what, const Msg &m, std::string_view value_field,
                                               const std::string &value)
{
    const std::string w(what);
    if (!m.has_entry()) {
        return failure(DecodeError::bad_field, w + ".entry is missing");
    }
    const TableKey &entry = m.entry();
    if (auto f = check_name(w + ".entry.chain", entry.chain())) {
        return f;
    }
    if (auto f = check_name(w + ".entry.nf", entry.nf())) {
        return f;
    }
    if (auto f = check_name(w + ".entry.table", entry.table())) {
        return f;
    }
    if (auto f = check_size(w + ".entry.key", entry.key(), kMaxKeyBytes)) {
        return f;
    }
    return check_size(w + "." + std::string(value_field), value, kMaxValueBytes);
}

// Lease ids start at 1: 0 is an unset field.
std::optional<DecodeFailure> check_lease_id(std::string_view what, uint64_t lease_id)
{
    if (lease_id == 0) {
        return failure(DecodeError::bad_field, std::string(what) + ".lease_id is 0");
    }
    return std::nullopt;
}

std::optional<DecodeFailure> check_hello(const Hello &h)
{
    if (h.protocol_version() != kProtocolVersion) {
        return failure(DecodeError::wrong_version, "hello.protocol_version is " + std::to_string(h.protocol_version()) +
                                                       ", this host speaks " + std::to_string(kProtocolVersion));
    }
    if (auto f = check_name("hello.host_id", h.host_id())) {
        return f;
    }
    if (h.underlay_mac().size() != kMacBytes) {
        return failure(DecodeError::bad_field,
                       "hello.underlay_mac has " + std::to_string(h.underlay_mac().size()) + " bytes, not 6");
    }
    if (h.vxlan_port() == 0 || h.vxlan_port() > std::numeric_limits<uint16_t>::max()) {
        return failure(DecodeError::bad_field,
                       "hello.vxlan_port " + std::to_string(h.vxlan_port()) + " is not a UDP port (1-65535)");
    }
    return std::nullopt;
}

// A repeated field: at most kMaxBatchItems, each checked by `one`.
template<class Items, class Check>
std::optional<DecodeFailure> check_each(const std::string &what, const Items &items, Check one)
{
    if (static_cast<std::size_t>(items.size()) > kMaxBatchItems) {
        return failure(DecodeError::bad_field, what + " has " + std::to_string(items.size()) + " items, more than " +
                                                   std::to_string(kMaxBatchItems));
    }
    for (const auto &item : items) {
        if (auto f = one(item)) {
            return f;
        }
    }
    return std::nullopt;
}

// A chain tag travels in 24 bits of the VXLAN header (net/vxlan.h).
std::optional<DecodeFailure> check_chain_tag(const char *field, uint32_t tag)
{
    if (tag > 0xffffff) {
        return failure(DecodeError::bad_field,
                       std::string(field) + " " + std::to_string(tag) + " does not fit 24 bits");
    }
    return std::nullopt;
}

// A SHA-256 digest: 32 bytes, or absent where a field allows it.
std::optional<DecodeFailure> check_digest(const std::string &field, const std::string &digest, bool required)
{
    if (digest.size() == kDigestBytes || (digest.empty() && !required)) {
        return std::nullopt;
    }
    return failure(DecodeError::bad_field,
                   field + " has " + std::to_string(digest.size()) + " bytes, not " + std::to_string(kDigestBytes));
}

std::optional<DecodeFailure> check_table_name(const std::string &what, const std::string &nf, const std::string &table)
{
    if (auto f = check_name(what + ".nf", nf)) {
        return f;
    }
    return check_name(what + ".table", table);
}

std::optional<DecodeFailure> check_scale_out_request(const ScaleOutRequest &r)
{
    if (r.instances() == 0) {
        return failure(DecodeError::bad_field, "scale_out_request.instances is 0");
    }
    if (auto f = check_chain_tag("scale_out_request.origin_tag", r.origin_tag())) {
        return f;
    }
    if (auto f = check_name("scale_out_request.chain", r.chain())) {
        return f;
    }
    return check_each("scale_out_request.read_state", r.read_state(), [](const ReadStateDigest &d) {
        const std::string what = "scale_out_request.read_state";
        if (auto f = check_table_name(what, d.nf(), d.table())) {
            return f;
        }
        if (d.key_size() == 0 || d.key_size() > kMaxKeyBytes || d.value_size() > kMaxValueBytes) {
            return std::optional(failure(DecodeError::bad_field, what + " sizes " + std::to_string(d.key_size()) + "/" +
                                                                     std::to_string(d.value_size()) +
                                                                     " are not a table's"));
        }
        return check_digest(what + ".sha256", d.sha256(), true);
    });
}

std::optional<DecodeFailure> check_state_copies(const StateCopies &c)
{
    if (auto f = check_name("state_copies.chain", c.chain())) {
        return f;
    }
    if (auto f = check_table_name("state_copies", c.nf(), c.table())) {
        return f;
    }
    if (auto f = check_digest("state_copies.sha256", c.sha256(), c.last())) {
        return f;
    }
    return check_each("state_copies.entries", c.entries(), [](const Entry &entry) {
        if (auto f = check_size("state_copies.entries.key", entry.key(), kMaxKeyBytes)) {
            return f;
        }
        return check_size("state_copies.entries.value", entry.value(), kMaxValueBytes);
    });
}

std::optional<DecodeFailure> check_body(const Envelope &e)
{
    switch (e.body_case()) {
    case Envelope::kHello:
        return check_hello(e.hello());
    case Envelope::kHeartbeat:
    case Envelope::kAck:
        return std::nullopt;
    case Envelope::kError:
        return check_size("error.text", e.error().text(), kMaxErrorTextBytes);
    case Envelope::kScaleOutRequest:
        return check_scale_out_request(e.scale_out_request());
    case Envelope::kScaleOutAccept:
        if (auto f = check_chain_tag("scale_out_accept.tag", e.scale_out_accept().tag())) {
            return f;
        }
        if (auto f = check_name("scale_out_accept.chain", e.scale_out_accept().chain())) {
            return f;
        }
        return check_each("scale_out_accept.read_state_wanted", e.scale_out_accept().read_state_wanted(),
                          [](const TableName &t) {
                              return check_table_name("scale_out_accept.read_state_wanted", t.nf(), t.table());
                          });
    case Envelope::kStateCopies:
        return check_state_copies(e.state_copies());
    case Envelope::kScaleOutReady:
        return check_name("scale_out_ready.chain", e.scale_out_ready().chain());
    case Envelope::kRouteUpdate:
        if (auto f = check_name("route_update.chain", e.route_update().chain())) {
            return f;
        }
        if (auto f = check_name("route_update.peer", e.route_update().peer())) {
            return f;
        }
        return check_size("route_update.bucket_mask", e.route_update().bucket_mask(), kMaxBucketMaskBytes);
    case Envelope::kStateCopy:
        return check_state_entry("state_copy", e.state_copy(), "value", e.state_copy().value());
    case Envelope::kLeaseGrant:
        if (auto f = check_lease_id("lease_grant", e.lease_grant().lease_id())) {
            return f;
        }
        return check_state_entry("lease_grant", e.lease_grant(), "value", e.lease_grant().value());
    case Envelope::kLeaseRenew:
        return check_lease_id("lease_renew", e.lease_renew().lease_id());
    case Envelope::kLeaseReturn:
        if (auto f = check_lease_id("lease_return", e.lease_return().lease_id())) {
            return f;
        }
        return check_size("lease_return.value", e.lease_return().value(), kMaxValueBytes);
    case Envelope::kLeaseGrants:
        return check_each("lease_grants.grants", e.lease_grants().grants(), [](const LeaseGrant &g) {
            if (auto f = check_lease_id("lease_grants.grants", g.lease_id())) {
                return f;
            }
            return check_state_entry("lease_grants.grants", g, "value", g.value());
        });
    case Envelope::kLeaseRenews:
        return check_each("lease_renews.renews", e.lease_renews().renews(),
                          [](const LeaseRenew &r) { return check_lease_id("lease_renews.renews", r.lease_id()); });
    case Envelope::kLeaseReturns:
        return check_each("lease_returns.returns", e.lease_returns().returns(), [](const LeaseReturn &r) {
            if (auto f = check_lease_id("lease_returns.returns", r.lease_id())) {
                return f;
            }
            return check_size("lease_returns.returns.value", r.value(), kMaxValueBytes);
        });
    case Envelope::kReplicaMerge:
        return check_state_entry("replica_merge", e.replica_merge(), "delta", e.replica_merge().delta());
    case Envelope::kReplicaMerges:
        return check_each("replica_merges.merges", e.replica_merges().merges(), [](const ReplicaMerge &m) {
            return check_state_entry("replica_merges.merges", m, "delta", m.delta());
        });
    case Envelope::kScaleIn:
        return check_name("scale_in.chain", e.scale_in().chain());
    case Envelope::BODY_NOT_SET:
        break;
    }
    // An unset body, or a field number this version does not know (protobuf
    // keeps it as an unknown field and leaves the oneof unset).
    return failure(DecodeError::no_body, "the envelope has no body this host knows");
}

} // namespace

const char *decode_error_name(DecodeError error) noexcept
{
    switch (error) {
#define SERPENS_PEER_NAME(name)                                                                                        \
    case DecodeError::name:                                                                                            \
        return #name;
        SERPENS_PEER_DECODE_ERRORS(SERPENS_PEER_NAME)
#undef SERPENS_PEER_NAME
    }
    return "unknown";
}

std::optional<DecodeFailure> validate(const Envelope &e)
{
    if (e.version() != kProtocolVersion) {
        return failure(DecodeError::wrong_version, "envelope version " + std::to_string(e.version()) +
                                                       ", this host speaks " + std::to_string(kProtocolVersion));
    }
    if (e.request_id() == 0) {
        return failure(DecodeError::bad_header, "request_id is 0");
    }
    if (e.sequence() == 0) {
        return failure(DecodeError::bad_header, "sequence is 0");
    }
    return check_body(e);
}

std::optional<DecodeFailure> validate_body(const Envelope &envelope) { return check_body(envelope); }

std::string encode_frame(const Envelope &envelope)
{
    if (auto f = validate(envelope)) {
        throw serpens::Error("peer: refusing to send a " + std::string(body_name(envelope)) + ": " + f->message);
    }
    const std::size_t size = envelope.ByteSizeLong();
    if (size > kMaxFrameBytes) {
        throw serpens::Error("peer: refusing to send a " + std::string(body_name(envelope)) + " of " +
                             std::to_string(size) + " bytes, more than " + std::to_string(kMaxFrameBytes));
    }
    std::string frame(kFrameHeaderBytes + size, '\0');
    frame[0] = static_cast<char>(size >> 24);
    frame[1] = static_cast<char>(size >> 16);
    frame[2] = static_cast<char>(size >> 8);
    frame[3] = static_cast<char>(size);
    if (!envelope.SerializeToArray(frame.data() + kFrameHeaderBytes, static_cast<int>(size))) {
        throw serpens::Error("peer: cannot serialize a " + std::string(body_name(envelope)));
    }
    return frame;
}

std::variant<std::size_t, DecodeFailure> frame_payload_length(std::span<const uint8_t, kFrameHeaderBytes> header)
{
    const std::size_t size = std::size_t{header[0]} << 24 | std::size_t{header[1]} << 16 | std::size_t{header[2]} << 8 |
                             std::size_t{header[3]};
    if (size == 0) {
        return failure(DecodeError::empty, "a frame of 0 bytes");
    }
    if (size > kMaxFrameBytes) {
        return failure(DecodeError::too_large,
                       "a frame of " + std::to_string(size) + " bytes, more than " + std::to_string(kMaxFrameBytes));
    }
    return size;
}

Decoded decode_payload(std::span<const uint8_t> payload)
{
    if (payload.size() > kMaxFrameBytes) {
        return failure(DecodeError::too_large, "a payload of " + std::to_string(payload.size()) + " bytes, more than " +
                                                   std::to_string(kMaxFrameBytes));
    }
    Envelope envelope;
    if (!envelope.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return failure(DecodeError::bad_protobuf,
                       "the " + std::to_string(payload.size()) + " bytes are not an Envelope (protobuf refused them)");
    }
    if (auto f = validate(envelope)) {
        return std::move(*f);
    }
    return envelope;
}

Decoded decode_frame(std::span<const uint8_t> frame)
{
    if (frame.size() < kFrameHeaderBytes) {
        return failure(DecodeError::truncated,
                       "a frame of " + std::to_string(frame.size()) + " bytes has no whole length header");
    }
    auto length = frame_payload_length(frame.first<kFrameHeaderBytes>());
    if (auto *f = std::get_if<DecodeFailure>(&length)) {
        return std::move(*f);
    }
    const std::size_t size = std::get<std::size_t>(length);
    const std::size_t have = frame.size() - kFrameHeaderBytes;
    if (have < size) {
        return failure(DecodeError::truncated,
                       "the header announces " + std::to_string(size) + " bytes, " + std::to_string(have) + " came");
    }
    if (have > size) {
        return failure(DecodeError::trailing, std::to_string(have - size) + " bytes after the frame");
    }
    return decode_payload(frame.subspan(kFrameHeaderBytes));
}

std::string_view body_name(const Envelope &envelope)
{
    if (envelope.body_case() == Envelope::BODY_NOT_SET) {
        return "none";
    }
    const auto *field = Envelope::descriptor()->FindFieldByNumber(static_cast<int>(envelope.body_case()));
    return field != nullptr ? std::string_view(field->name()) : std::string_view("unknown");
}

Envelope error_reply(Error::Code code, std::string_view text)
{
    Envelope reply;
    reply.mutable_error()->set_code(code);
    reply.mutable_error()->set_text(std::string(text.substr(0, kMaxErrorTextBytes)));
    return reply;
}

Envelope ack_reply()
{
    Envelope reply;
    reply.mutable_ack();
    return reply;
}

} // namespace serpens::peer
