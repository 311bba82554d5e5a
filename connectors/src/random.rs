//! Random values by position: a hash of (seed, stream, position), so any
//! row can be generated again without generating those before it.

/// SplitMix64's finalizer over the combined inputs.
pub(crate) fn hash(seed: u64, stream: u64, position: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .wrapping_add(position.wrapping_mul(0xA076_1D64_78BD_642F));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A lower-case ASCII string of `length` letters.
pub(crate) fn letters(seed: u64, stream: u64, position: u64, length: usize) -> String {
    (0..length)
        .map(|i| {
            let h = hash(seed, stream.wrapping_add(i as u64 * 7919), position);
            (b'a' + (h % 26) as u8) as char
        })
        .collect()
}
