//! `serial::open(path, baud)` in Rhai: a physical serial port (or any tty)
//! as an expect session, for machines whose only way in is a cable.

use std::sync::Arc;

use drydock_runtime::RunContext;
use rhai::{Engine, EvalAltResult, Module, Position};

use crate::console::ExpectHandle;
use crate::doc::doc;
use crate::expect::{ExpectOptions, Expecter, FdTransport, Transport};

/// Opens `path` at `baud` (8N1, no flow control).
pub fn open_port(path: &str, baud: u32) -> Result<Box<dyn Transport>, String> {
    let port = serialport::new(path, baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .open_native()
        .map_err(|e| format!("cannot open serial port {path} at {baud} baud: {e}"))?;
    // serialport configures the line; reads and writes go through a plain
    // descriptor so a hang-up reads as the end of the stream.
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `port`, which outlives this borrow
    // (it is kept in the transport); we only duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
    let fd = borrowed
        .try_clone_to_owned()
        .map_err(|e| format!("cannot use serial port {path}: {e}"))?;
    Ok(Box::new(SerialTransport {
        inner: FdTransport::new(
            std::fs::File::from(fd),
            format!("serial port {path} at {baud} baud"),
        ),
        _port: port,
    }))
}

/// A configured serial port.
pub struct SerialTransport {
    inner: FdTransport<std::fs::File>,
    _port: serialport::TTYPort,
}

impl Transport for SerialTransport {
    fn read_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: std::time::Duration,
    ) -> std::io::Result<crate::expect::ReadResult> {
        self.inner.read_timeout(buf, timeout)
    }
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.inner.send(data)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Registers the `serial` module.
pub fn install(engine: &mut Engine, ctx: &RunContext) {
    let mut module = Module::new();
    let interrupt = ctx.interrupt.clone();
    let transcripts = ctx.data_dir.join("transcripts");
    let exec = ctx.execution_id.clone();
    let secrets = ctx.secrets.clone();
    doc("serial::open(path, baud)", &[
        "An expect session on a serial port (8N1, no flow control) or any tty, with the methods of `ExpectSession`.",
        "Fails when the port cannot be opened or the baud rate is out of range.",
        "Example: `let s = serial::open(\"/dev/ttyUSB0\", 115200);`",
    ])
    .set_in(
        &mut module,
        move |path: &str, baud: i64| -> Result<ExpectHandle, Box<EvalAltResult>> {
            let baud = u32::try_from(baud).map_err(|_| {
                EvalAltResult::ErrorRuntime(format!("bad baud rate {baud}").into(), Position::NONE)
            })?;
            let transport = open_port(path, baud)
                .map_err(|e| EvalAltResult::ErrorRuntime(e.into(), Position::NONE))?;
            let mut session = Expecter::new(transport, ExpectOptions::default());
            if std::fs::create_dir_all(&transcripts).is_ok() {
                let name = path.trim_start_matches('/').replace('/', "_");
                let _ = session.record_transcript(
                    &transcripts.join(format!("{exec}-serial-{name}.log")),
                    &secrets,
                );
            }
            Ok(ExpectHandle::new(session, Arc::clone(&interrupt)))
        },
    );
    engine.register_static_module("serial", module.into());
}
