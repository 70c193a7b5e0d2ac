//! One Python worker process: how it is started, fed and stopped.
//!
//! The engine spawns `python -m riffle._worker` (never forks: its threads make `fork`
//! unsafe) with three inherited descriptors: a Unix socket for control messages (fd 3) and
//! two memfd regions of shared memory, one for input (fd 4) and one for output (fd 5). A
//! batch travels as an Arrow IPC stream: the engine writes it into the input region and
//! sends `{"op": "batch", "len": ...}`; the worker reads it from the mapping without a copy,
//! runs the user's code, writes the result's IPC stream into the output region and answers
//! `{"op": "result", "len": ...}`. Either side grows a region it writes to (`ftruncate`)
//! and the other maps it again at the size the message gives. Control messages are a
//! 4-byte little-endian length and a JSON object; data never goes through the socket.
//!
//! The worker dies with the engine (`PR_SET_PDEATHSIG`), and with its [`Worker`] (killed on
//! drop). Its stdout and stderr are forwarded line by line, prefixed with its name; the
//! last lines of stderr go into the error when it crashes (with `PYTHONFAULTHANDLER`, a
//! segfault's Python stack).

use std::collections::VecDeque;
use std::fs::File;
use std::io::Cursor;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use memmap2::MmapMut;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// Lines of a worker's stderr kept for its crash report.
const STDERR_TAIL: usize = 20;
/// The first size of a region; each grows to what it must hold.
const INITIAL_REGION: u64 = 1 << 20;

/// How a worker is started: the same for every worker of a pool but its id and GPUs.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// What the user code is called in messages: `map_batches(Model)`.
    pub function: String,
    /// The interpreter.
    pub executable: String,
    /// The workers' `PYTHONPATH`.
    pub python_path: Option<String>,
    /// The pickled user code (opaque here).
    pub payload: Arc<Vec<u8>>,
    /// BLAS/OpenMP threads per worker.
    pub num_cpus: usize,
    /// The declared result columns, which the worker casts its results to.
    pub output: SchemaRef,
}

/// Why a worker failed a batch (or failed to start).
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerError {
    /// The user's code raised: its type, message and traceback, as text.
    UserCode(String),
    /// The process died: how, and the last lines of its stderr.
    Crashed(String),
}

/// A shared-memory region: a memfd and the engine's mapping of it.
struct Region {
    file: File,
    map: MmapMut,
}

impl Region {
    fn new(name: &str) -> std::io::Result<Self> {
        let name = std::ffi::CString::new(name).expect("region names have no NUL");
        // SAFETY: memfd_create with a valid C string; the descriptor is owned by the File.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(INITIAL_REGION)?;
        // SAFETY: the memfd is only resized through `grow` and `remap`, which map it again.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(Self { file, map })
    }

    /// Room for `len` bytes (the region at least doubles, so growth is rare).
    fn grow(&mut self, len: usize) -> std::io::Result<()> {
        if len <= self.map.len() {
            return Ok(());
        }
        let size = len.max(self.map.len() * 2) as u64;
        self.file.set_len(size)?;
        self.remap()
    }

    /// Maps the region again at the size its file has now (the worker grew it).
    fn remap(&mut self) -> std::io::Result<()> {
        // SAFETY: as in `new`.
        self.map = unsafe { MmapMut::map_mut(&self.file)? };
        Ok(())
    }
}

/// Writes into a region from its start, growing it when the next bytes do not fit.
struct RegionWriter<'a> {
    region: &'a mut Region,
    /// Bytes written so far.
    len: usize,
}

impl std::io::Write for RegionWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let end = self.len + bytes.len();
        self.region.grow(end)?;
        self.region.map[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running worker, ready for batches.
pub struct Worker {
    /// The worker's number in its pool (its `RIFFLE_WORKER_ID`).
    pub id: usize,
    child: Child,
    control: UnixStream,
    input: Region,
    output: Region,
    stderr: Arc<Mutex<VecDeque<String>>>,
    spec: WorkerSpec,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Worker {
    /// Starts worker `id` with `gpus` visible, and waits until its user code is loaded (a
    /// class constructed). A failure to start is an error naming the function.
    pub async fn start(spec: &WorkerSpec, id: usize, gpus: &[String]) -> Result<Self, WorkerError> {
        let crashed = |what: String| WorkerError::Crashed(format!("{}: {what}", spec.function));
        let input =
            Region::new("riffle-input").map_err(|e| crashed(format!("shared memory: {e}")))?;
        let output =
            Region::new("riffle-output").map_err(|e| crashed(format!("shared memory: {e}")))?;
        let (control, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| crashed(format!("socket: {e}")))?;
        let mut command = Command::new(&spec.executable);
        command
            .args(["-m", "riffle._worker"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("RIFFLE_WORKER_ID", id.to_string())
            .env("RIFFLE_CONTROL_FD", "3")
            .env("RIFFLE_INPUT_FD", "4")
            .env("RIFFLE_OUTPUT_FD", "5")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONFAULTHANDLER", "1")
            .env("CUDA_VISIBLE_DEVICES", gpus.join(","));
        for name in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
            command.env(name, spec.num_cpus.max(1).to_string());
        }
        if let Some(path) = &spec.python_path {
            command.env("PYTHONPATH", path);
        }
        let fds = [
            theirs.as_raw_fd(),
            input.file.as_raw_fd(),
            output.file.as_raw_fd(),
        ];
        // SAFETY: only async-signal-safe calls (fcntl, dup2, prctl) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Move the descriptors out of the way of 3..=5 first, then into place (dup2
                // clears close-on-exec on the copies).
                let mut high = [0; 3];
                for (slot, fd) in high.iter_mut().zip(fds) {
                    *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                    if *slot < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (target, fd) in (3..).zip(high) {
                    if libc::dup2(fd, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Die with the engine (with the thread that spawned it: a runtime worker
                // thread, which lives as long as the runtime).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| crashed(format!("cannot start '{}': {e}", spec.executable)))?;
        drop(theirs);
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let prefix = format!("[{} worker {id}]", spec.function);
        if let Some(out) = child.stdout.take() {
            forward(out, prefix.clone(), None);
        }
        if let Some(err) = child.stderr.take() {
            forward(err, prefix, Some(Arc::clone(&stderr)));
        }
        control
            .set_nonblocking(true)
            .map_err(|e| crashed(format!("socket: {e}")))?;
        let control = UnixStream::from_std(control).map_err(|e| crashed(format!("socket: {e}")))?;
        let mut worker = Self {
            id,
            child,
            control,
            input,
            output,
            stderr,
            spec: spec.clone(),
        };
        worker.init().await?;
        Ok(worker)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn init(&mut self) -> Result<(), WorkerError> {
        let payload = Arc::clone(&self.spec.payload);
        let mut schema = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut schema, &self.spec.output)
                .map_err(|e| WorkerError::Crashed(format!("encoding the output schema: {e}")))?;
            writer
                .finish()
                .map_err(|e| WorkerError::Crashed(format!("encoding the output schema: {e}")))?;
        }
        let total = payload.len() + schema.len();
        self.write_input(
            |region| {
                region[..payload.len()].copy_from_slice(&payload);
                region[payload.len()..total].copy_from_slice(&schema);
            },
            total,
        )?;
        let message = json!({
            "op": "init",
            "payload": payload.len(),
            "schema": schema.len(),
            "size": self.input.map.len(),
        });
        self.send(&message).await?;
        self.expect("ready", "init").await.map(drop)
    }

    /// The worker's answer to a request (`what`, for messages): the message `op`, or its
    /// user-code error.
    async fn expect(&mut self, op: &str, what: &str) -> Result<Value, WorkerError> {
        let reply = self.receive().await?;
        match reply["op"].as_str() {
            Some(answer) if answer == op => Ok(reply),
            Some("error") => Err(WorkerError::UserCode(user_error(&reply))),
            _ => Err(WorkerError::Crashed(format!(
                "{}: the worker answered {reply} to {what}",
                self.spec.function
            ))),
        }
    }

    /// Runs the user's code on `batch` (number `seq` of the pool) and returns its result.
    pub async fn run(&mut self, seq: u64, batch: &RecordBatch) -> Result<RecordBatch, WorkerError> {
        // The IPC stream is written straight into the shared region (no buffer between).
        let mut into = RegionWriter {
            region: &mut self.input,
            len: 0,
        };
        {
            let failed = |e| WorkerError::Crashed(format!("encoding the batch: {e}"));
            let mut writer = StreamWriter::try_new(&mut into, &batch.schema()).map_err(failed)?;
            writer.write(batch).map_err(failed)?;
            writer.finish().map_err(failed)?;
        }
        let len = into.len;
        let message = json!({"op": "batch", "seq": seq, "len": len, "size": self.input.map.len()});
        self.send(&message).await?;
        let reply = self.expect("result", "a batch").await?;
        let len = reply["len"].as_u64().unwrap_or(0) as usize;
        let size = reply["size"].as_u64().unwrap_or(0) as usize;
        if size != self.output.map.len() {
            self.output
                .remap()
                .map_err(|e| WorkerError::Crashed(format!("mapping the result: {e}")))?;
        }
        if len > self.output.map.len() {
            return Err(WorkerError::Crashed(format!(
                "{}: the worker announced {len} bytes in a region of {}",
                self.spec.function,
                self.output.map.len()
            )));
        }
        // The reader copies each message body into buffers of its own: one copy out of the
        // region, which is then free for the next batch.
        let mut reader = StreamReader::try_new(Cursor::new(&self.output.map[..len]), None)
            .map_err(|e| WorkerError::Crashed(format!("reading the result: {e}")))?;
        match reader.next() {
            Some(Ok(result)) => Ok(result),
            Some(Err(e)) => Err(WorkerError::Crashed(format!("reading the result: {e}"))),
            None => Err(WorkerError::Crashed("the result had no batch".into())),
        }
    }

    fn write_input(&mut self, fill: impl FnOnce(&mut [u8]), len: usize) -> Result<(), WorkerError> {
        self.input
            .grow(len)
            .map_err(|e| WorkerError::Crashed(format!("growing shared memory: {e}")))?;
        fill(&mut self.input.map[..]);
        Ok(())
    }

    async fn send(&mut self, message: &Value) -> Result<(), WorkerError> {
        let body = message.to_string();
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(body.as_bytes());
        if self.control.write_all(&frame).await.is_err() {
            return Err(self.died().await);
        }
        Ok(())
    }

    async fn receive(&mut self) -> Result<Value, WorkerError> {
        let mut length = [0u8; 4];
        if self.control.read_exact(&mut length).await.is_err() {
            return Err(self.died().await);
        }
        let mut body = vec![0u8; u32::from_le_bytes(length) as usize];
        if self.control.read_exact(&mut body).await.is_err() {
            return Err(self.died().await);
        }
        serde_json::from_slice(&body).map_err(|e| {
            WorkerError::Crashed(format!(
                "{}: an unreadable message: {e}",
                self.spec.function
            ))
        })
    }

    /// The error for a worker whose socket closed: how it ended, and its last stderr lines.
    async fn died(&mut self) -> WorkerError {
        let pid = self.child.id().map_or("?".to_string(), |p| p.to_string());
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let how = match status {
            Ok(Ok(status)) => match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => {
                    format!("was killed by signal {signal} ({})", signal_name(signal))
                }
                _ => "ended".to_string(),
            },
            _ => "closed its control channel".to_string(),
        };
        // The forwarding tasks may still be reading the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail: Vec<String> = self
            .stderr
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default();
        let mut message = format!(
            "{} worker {} (pid {pid}) {how}",
            self.spec.function, self.id
        );
        if !tail.is_empty() {
            message.push_str("; its last stderr lines:\n");
            message.push_str(&tail.join("\n"));
        }
        WorkerError::Crashed(message)
    }

    /// Asks the worker to finish, waits up to `grace` for it, then kills it.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.send(&json!({"op": "shutdown"})).await;
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Ends the worker now: SIGTERM, then SIGKILL after `grace` (a batch that hung).
    pub async fn terminate(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The text of a user-code error message from the worker.
fn user_error(reply: &Value) -> String {
    let text = |key: &str| reply[key].as_str().unwrap_or_default().to_string();
    let mut message = format!("{}: {}", text("type"), text("message"));
    let traceback = text("traceback");
    if !traceback.is_empty() {
        message.push('\n');
        message.push_str(traceback.trim_end());
    }
    message
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGINT => "SIGINT",
        libc::SIGFPE => "SIGFPE",
        _ => "a signal",
    }
}

/// Forwards a worker's output lines to the engine's stderr, prefixed; keeps the last ones
/// in `tail`.
fn forward(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    prefix: String,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{prefix} {line}");
            if let Some(tail) = &tail
                && let Ok(mut tail) = tail.lock()
            {
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    });
}
