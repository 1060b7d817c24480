// fuzz-pcap: the capture reader (net/pcap.cpp) that serpens-bench and the
// traffic tools read operators' captures with.  Any bytes must end in
// records or a PcapError, never a crash or a huge allocation; and what was
// read, written back and read again, is the same records.

#include "net/pcap.h"

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

using serpens::net::PcapError;
using serpens::net::PcapReader;
using serpens::net::PcapRecord;
using serpens::net::PcapWriter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    std::istringstream in(std::string(reinterpret_cast<const char *>(data), size));
    std::vector<PcapRecord> records;
    uint32_t snaplen = 0;
    try {
        PcapReader reader(in);
        snaplen = reader.snaplen();
        while (auto pkt = reader.next()) {
            records.push_back({{pkt->data.begin(), pkt->data.end()}, pkt->ts_ns, pkt->orig_len});
        }
    } catch (const PcapError &) {
        // Refused with a message: what an operator sees.  Keep what was read.
    }

    // The round trip, at microsecond resolution (what the writer stores),
    // with a snaplen that keeps every record whole.
    std::ostringstream out;
    {
        uint32_t longest = snaplen;
        for (const PcapRecord &r : records) {
            longest = std::max<uint32_t>(longest, static_cast<uint32_t>(r.data.size()));
        }
        PcapWriter writer(out, "<out>", longest == 0 ? 1 : longest);
        for (const PcapRecord &r : records) {
            writer.write(r.data, r.ts_ns, r.orig_len);
        }
        writer.close();
    }
    std::istringstream again(out.str());
    PcapReader reread(again, "<out>");
    for (const PcapRecord &r : records) {
        auto pkt = reread.next();
        if (!pkt || !std::equal(pkt->data.begin(), pkt->data.end(), r.data.begin(), r.data.end()) ||
            pkt->ts_ns / 1000 != r.ts_ns / 1000) {
            std::abort(); // the writer lost or changed a record
        }
    }
    if (reread.next()) {
        std::abort(); // the writer added one
    }
    return 0;
}
