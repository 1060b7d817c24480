#pragma once
// Framing of the peer protocol on a byte stream: each frame is a 4-byte
// big-endian payload length, then that many bytes of a serialized Envelope
// (peer.proto).  Decoding refuses, with a named error, anything a well-behaved
// peer never sends: a frame over kMaxFrameBytes, bytes protobuf cannot parse,
// another protocol version, no body, names, keys or values over their limits.
// Hostile bytes produce an error, never a crash.
//
// Thread safety: every function here is pure (no shared state); call them
// from any thread.

#include "peer/peer.pb.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace serpens::peer {

inline constexpr uint32_t kProtocolVersion = PROTOCOL_VERSION_CURRENT;

inline constexpr std::size_t kFrameHeaderBytes = 4;
inline constexpr std::size_t kMaxFrameBytes = 1 << 20; // payload, without the header
// Names (host id, chain, NF, table): a DNS name fits; so does every name host.toml takes.
inline constexpr std::size_t kMaxNameBytes = 255;
// State keys and values: above the state tables' own limits (state/layout.h).
inline constexpr std::size_t kMaxKeyBytes = 256;
inline constexpr std::size_t kMaxValueBytes = 256 * 1024;
inline constexpr std::size_t kMaxBatchItems = 4096; // grants, renewals or returns in one message
// What a sender puts in one batch message: items up to about this many bytes, well under a frame.
inline constexpr std::size_t kBatchBytes = kMaxFrameBytes / 2;
inline constexpr std::size_t kMaxErrorTextBytes = 1024;
inline constexpr std::size_t kDigestBytes = 32; // SHA-256
// RouteUpdate.bucket_mask: one bit per router bucket.
inline constexpr std::size_t kMaxBucketMaskBytes = 128;
inline constexpr std::size_t kMacBytes = 6;

// Why a frame was refused: X(name), one a reason.
#define SERPENS_PEER_DECODE_ERRORS(X)                                                                                  \
    X(truncated)      /* fewer bytes than the header announces */                                                      \
    X(trailing)       /* more bytes than the header announces */                                                       \
    X(too_large)      /* the header announces more than kMaxFrameBytes */                                              \
    X(empty)          /* the header announces 0 bytes */                                                               \
    X(bad_protobuf)   /* protobuf cannot parse the payload */                                                          \
    X(wrong_version)  /* Envelope.version (or Hello.protocol_version) is not kProtocolVersion */                       \
    X(no_body)        /* no message in the body, or one this version does not know */                                  \
    X(bad_header)     /* request_id or sequence is 0 */                                                                \
    X(field_too_long) /* a name, key, value or text over its limit */                                                  \
    X(bad_field)      /* a field out of its range (empty name, MAC not 6 bytes, ...) */

enum class DecodeError {
#define SERPENS_PEER_ENUM(name) name,
    SERPENS_PEER_DECODE_ERRORS(SERPENS_PEER_ENUM)
#undef SERPENS_PEER_ENUM
};

// "truncated", "too_large", ...: stable names for logs and tests.
const char *decode_error_name(DecodeError error) noexcept;

struct DecodeFailure {
    DecodeError error;
    std::string message; // what was wrong, naming the field and the limit
};

using Decoded = std::variant<Envelope, DecodeFailure>;

// The checks decode makes after parsing; nullopt when `envelope` may go on the wire.
std::optional<DecodeFailure> validate(const Envelope &envelope);
// validate()'s checks of the body alone, for a body whose header is yet to be stamped.
std::optional<DecodeFailure> validate_body(const Envelope &envelope);

// Header and payload of `envelope`.  Throws Error when validate() refuses it
// or it serializes to more than kMaxFrameBytes: a host never sends what its
// peer must refuse.
std::string encode_frame(const Envelope &envelope);

// The payload length the header at the front of `header` announces
// (kFrameHeaderBytes of it are read), or too_large / empty.
std::variant<std::size_t, DecodeFailure> frame_payload_length(std::span<const uint8_t, kFrameHeaderBytes> header);

// One payload (without its header), parsed and validated.
Decoded decode_payload(std::span<const uint8_t> payload);

// Exactly one whole frame: header, then the payload it announces; bytes
// missing are `truncated`, bytes beyond it `trailing`.
Decoded decode_frame(std::span<const uint8_t> frame);

// The name of the body's message ("hello", "lease_grant", ...), "none" when unset.
std::string_view body_name(const Envelope &envelope);

// A reply saying why a request was not served; the text is cut to
// kMaxErrorTextBytes, so the reply always goes on the wire.
Envelope error_reply(Error::Code code, std::string_view text);
// A reply saying the request was done.
Envelope ack_reply();

} // namespace serpens::peer
