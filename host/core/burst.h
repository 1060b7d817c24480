#pragma once

#include <cstdint>

namespace serpens {

// Packets in one batch at most, from RX through the chain to TX: the size of
// every per-burst array on the data path.
inline constexpr uint32_t max_burst = 256;

} // namespace serpens
