//! Legacy PC devices: the 8250 UART, the i8042 controller, and the ACPI
//! power/reset registers.

pub mod i8042;
pub mod power;
pub mod serial;
