//! Put tampered files back from the trusted store: plan, then apply.
