//! What an instance's serial console printed: a boot's log (or the running
//! boot's in-memory tail), and what came since an offset (for waiting on a
//! prompt).

use super::*;

impl Host {
    /// The console output of one boot (the latest by default), optionally
    /// only its last `tail` lines.
    pub fn console_output(
        &self,
        id: &str,
        boot: Option<u32>,
        tail: Option<usize>,
    ) -> Result<String, HostError> {
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        let last_lines = |text: &str, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n") + "\n"
        };
        // The latest lines of a running instance come from the in-memory
        // tail its process keeps; everything else from the boot's log file.
        if let (None, Some(n), true) = (boot, tail, i.state == InstanceState::Running) {
            if let Ok(reply) =
                supervisor::send_control(&self.instance_dir(id), &ControlCommand::Tail)
            {
                if let Ok(text) = serde_json::from_str::<String>(&reply) {
                    return Ok(last_lines(&text, n));
                }
            }
        }
        let boot = boot.unwrap_or(i.boots);
        if boot == 0 {
            return Ok(String::new());
        }
        let path = supervisor::console_log_path(&self.instance_dir(id), boot);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HostError::NotFound(format!(
                    "instance {id} has no console log for boot {boot} (it has booted {} times)",
                    i.boots
                )))
            }
            Err(e) => return Err(HostError::io("read", &path, e)),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(match tail {
            Some(n) => last_lines(&text, n),
            None => text,
        })
    }

    /// Output of one boot (latest by default) from byte `offset`, GCE
    /// style: returns (start, next offset, bytes). Nothing is lost between
    /// two calls that chain `next` into `offset`.
    pub fn console_since(
        &self,
        id: &str,
        boot: Option<u32>,
        offset: u64,
    ) -> Result<(u64, u64, Vec<u8>), HostError> {
        use std::os::unix::fs::FileExt;
        let i = self.store()?.instance(id)?;
        let i = self.in_region(id, &i.region.clone(), i)?;
        let boot = boot.unwrap_or(i.boots);
        let path = supervisor::console_log_path(&self.instance_dir(id), boot);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((offset, offset, Vec::new()))
            }
            Err(e) => return Err(HostError::io("open", &path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| HostError::io("stat", &path, e))?
            .len();
        let start = offset.min(len);
        let mut buf = vec![0u8; (len - start).min(16 << 20) as usize];
        f.read_exact_at(&mut buf, start)
            .map_err(|e| HostError::io("read", &path, e))?;
        Ok((start, start + buf.len() as u64, buf))
    }
}
