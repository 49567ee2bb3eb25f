//! How much work a node asks of a new transaction: the stamp difficulty rises
//! with the load of the node's pool and falls back as it drains.
//!
//! The rule is a pure function of the pool's fill, so every node applies the
//! same one and a test can pin it: nothing extra while the pool is below an
//! eighth full, then one more bit each time its fill doubles (an eighth, a
//! quarter, a half, full), never below the chain's floor or above its ceiling.
//! One bit doubles the expected cost of a stamp, so a full pool asks sixteen
//! times the floor's work of each new write; a spammer pays for the pressure
//! it makes, and the honest client who reads the announced difficulty pays the
//! same price once.

/// The difficulty, in leading zero bits, a node requires of a new
/// transaction's stamp when its pool holds `load` of `capacity`.
pub fn required_bits(floor: u32, ceiling: u32, load: usize, capacity: usize) -> u32 {
    let ceiling = ceiling.max(floor);
    if capacity == 0 {
        return ceiling;
    }
    // Steps of doubling above an eighth: load*8/capacity in [1,2) -> 1,
    // [2,4) -> 2, [4,8) -> 3, [8,..) -> 4.
    let eighths = (load as u128 * 8) / capacity as u128;
    let extra = if eighths == 0 {
        0
    } else {
        (128 - eighths.leading_zeros()).min(4)
    };
    floor.saturating_add(extra).min(ceiling)
}

#[cfg(test)]
mod tests {
    use super::required_bits;

    #[test]
    fn the_floor_holds_while_the_pool_is_light() {
        assert_eq!(required_bits(8, 24, 0, 1000), 8);
        assert_eq!(required_bits(8, 24, 124, 1000), 8);
    }

    #[test]
    fn each_doubling_past_an_eighth_adds_a_bit() {
        assert_eq!(required_bits(8, 24, 125, 1000), 9);
        assert_eq!(required_bits(8, 24, 249, 1000), 9);
        assert_eq!(required_bits(8, 24, 250, 1000), 10);
        assert_eq!(required_bits(8, 24, 500, 1000), 11);
        assert_eq!(required_bits(8, 24, 999, 1000), 11);
        assert_eq!(required_bits(8, 24, 1000, 1000), 12);
        assert_eq!(required_bits(8, 24, 50_000, 1000), 12, "four bits at most");
    }

    #[test]
    fn the_ceiling_binds_and_a_bad_ceiling_is_the_floor() {
        assert_eq!(required_bits(8, 10, 1000, 1000), 10);
        assert_eq!(required_bits(8, 4, 1000, 1000), 8);
        assert_eq!(required_bits(8, 24, 1, 0), 24, "no room at all: the most");
    }

    #[test]
    fn it_never_falls_as_load_grows() {
        let mut last = 0;
        for load in 0..=2000 {
            let b = required_bits(3, 30, load, 1000);
            assert!(b >= last, "load {load}");
            last = b;
        }
    }
}
