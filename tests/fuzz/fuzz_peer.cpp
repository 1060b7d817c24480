// libFuzzer target for the peer protocol's decoder: whatever bytes a peer
// (or anyone between peers) sends, decode_frame gives a valid Envelope or a
// named error with a message, never a crash; and what it accepts encodes
// again and decodes to the same message.

#include "core/error.h"
#include "peer/codec.h"

#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace {

void check(const serpens::peer::Decoded &decoded)
{
    using namespace serpens::peer;
    if (const auto *f = std::get_if<DecodeFailure>(&decoded)) {
        if (f->message.empty() || std::strcmp(decode_error_name(f->error), "unknown") == 0) {
            __builtin_trap();
        }
        return;
    }
    const Envelope &envelope = std::get<Envelope>(decoded);
    if (validate(envelope) || body_name(envelope) == "none") {
        __builtin_trap(); // accepted what validate refuses
    }
    std::string frame;
    try {
        frame = encode_frame(envelope);
    } catch (const serpens::Error &) {
        __builtin_trap(); // a host could not pass on what it accepted
    }
    Decoded again =
        decode_frame(std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(frame.data()), frame.size()));
    if (!std::holds_alternative<Envelope>(again) ||
        std::get<Envelope>(again).SerializeAsString() != envelope.SerializeAsString()) {
        __builtin_trap();
    }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***)
{
    // protobuf logs every string field that is not UTF-8; the error it returns is enough here.
    google::protobuf::SetLogHandler(nullptr);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const std::span<const uint8_t> input(data, size);
    check(serpens::peer::decode_frame(input));   // a frame: header and payload
    check(serpens::peer::decode_payload(input)); // the same bytes as a payload alone
    return 0;
}
