//! Kernel access denials from the audit subsystem (netlink).
