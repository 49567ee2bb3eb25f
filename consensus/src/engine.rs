//! The shape every engine has.

/// A protocol as a pure state machine: the host feeds it inputs with the time,
/// and performs the effects it returns, in order.
pub trait Engine {
    /// What can happen to the engine.
    type Input;
    /// What the engine asks its host to do.
    type Effect;

    /// Handles one input at `now_ms` (the host's clock, Unix milliseconds) and
    /// returns the effects, in the order the host must perform them.
    #[must_use]
    fn handle(&mut self, now_ms: u64, input: Self::Input) -> Vec<Self::Effect>;
}
