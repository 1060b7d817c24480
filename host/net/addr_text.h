#pragma once
// Addresses as people read them: control replies, state dumps.  Cold path.

#include <cstdint>
#include <cstdio>
#include <string>

namespace serpens::net {

// The 6 bytes at `mac` as aa:bb:cc:dd:ee:ff.
inline std::string mac_text(const uint8_t *mac)
{
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    return buf;
}

} // namespace serpens::net
