//! A fake Lambda Runtime API on 127.0.0.1, to run a real function binary the way Lambda does:
//! the binary asks for the next invocation, gets one of the queued events, and posts its
//! answer back. <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>
//!
//! Plain HTTP/1.1 over `std::net` (the runtime's client keeps its connection alive, so each
//! connection serves requests until it closes). While the queue is empty, `next` waits for a
//! [`FakeRuntimeApi::push`], as in Lambda between invocations; the test ends the process.

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http1::read_request;

const PREFIX: &str = "/2018-06-01/runtime";

/// How one invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `POST …/invocation/{id}/response`: the function's result.
    Response(Value),
    /// `POST …/invocation/{id}/error`: the error the function reported.
    Error(Value),
}

impl Answer {
    /// The result, or a panic naming the error.
    pub fn response(&self) -> &Value {
        match self {
            Answer::Response(v) => v,
            Answer::Error(e) => panic!("the invocation failed: {e}"),
        }
    }
}

#[derive(Default)]
struct State {
    queued: VecDeque<(String, Value)>,
    /// Events queued so far (request ids are `req-<n>`).
    pushed: usize,
    answers: Vec<(String, Answer)>,
    init_error: Option<Value>,
    /// The function's timeout: each invocation's deadline is this after it is handed out
    /// (300 s when unset).
    timeout: Option<Duration>,
}

/// The fake API; it stops serving when dropped (after the function process is gone).
pub struct FakeRuntimeApi {
    address: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl FakeRuntimeApi {
    /// Serves `events` in order, with request ids `req-1`, `req-2`, ….
    pub fn start(events: Vec<Value>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        {
            let mut queue = state.0.lock().unwrap();
            queue.pushed = events.len();
            queue.queued = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (format!("req-{}", i + 1), e))
                .collect();
        }
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        Ok(FakeRuntimeApi { address, state })
    }

    /// Queues one more event (an invocation arriving later); returns its request id.
    pub fn push(&self, event: Value) -> String {
        let (lock, cond) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.pushed += 1;
        let id = format!("req-{}", state.pushed);
        state.queued.push_back((id.clone(), event));
        cond.notify_all();
        id
    }

    /// Gives invocations handed out from now on `timeout` to run (the function's configured
    /// timeout), instead of 300 s.
    pub fn set_timeout(&self, timeout: Duration) {
        self.state.0.lock().unwrap().timeout = Some(timeout);
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Waits until `count` invocations were answered (or the function reported an
    /// initialization error), at most `timeout`; returns the answers by request id.
    pub fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<(String, Answer)>, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.state;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(e) = &state.init_error {
                return Err(format!("the function failed to start: {e}"));
            }
            if state.answers.len() >= count {
                return Ok(state.answers.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} of {count} invocations answered after {timeout:?}",
                    state.answers.len()
                ));
            }
            state = cond.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Waits for `count` answers like [`FakeRuntimeApi::wait_for`], then ends the function
    /// (it waits for its next event for ever) and returns the answers with everything it wrote
    /// (stdout, then stderr); a missing answer panics with that log.
    pub fn answers_and_log(
        &self,
        child: &mut std::process::Child,
        count: usize,
        timeout: Duration,
    ) -> (Vec<(String, Answer)>, String) {
        let answers = self.wait_for(count, timeout);
        child.kill().unwrap();
        child.wait().unwrap();
        let mut log = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut log).unwrap();
        }
        if let Some(mut err) = child.stderr.take() {
            err.read_to_string(&mut log).unwrap();
        }
        let answers = answers.unwrap_or_else(|e| panic!("{e}\n{log}"));
        (answers, log)
    }

    /// A command running the function binary `bin` against this API, in an environment of only
    /// the variables Lambda sets (nothing inherited from the test: no `RUST_LOG`, no
    /// `PGKEEP_*`); the caller adds the function's own. stdout and stderr are piped.
    pub fn command(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear();
        let name = bin
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        cmd.env("AWS_LAMBDA_RUNTIME_API", &self.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("pgkeep-test-{name}"))
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/pgkeep-test-{name}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn serve(stream: TcpStream, shared: &(Mutex<State>, Condvar)) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let (lock, cond) = shared;
    while let Some(request) = read_request(&mut reader, &mut writer)? {
        let body = || serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let rest = request.path.strip_prefix(PREFIX).unwrap_or(&request.path);
        match (request.method.as_str(), rest) {
            ("GET", "/invocation/next") => {
                // Nothing to run: hold the request until an event arrives, as Lambda does.
                let (id, event, timeout) = {
                    let mut state = lock.lock().unwrap();
                    loop {
                        if let Some((id, event)) = state.queued.pop_front() {
                            break (id, event, state.timeout);
                        }
                        state = cond.wait(state).unwrap();
                    }
                };
                let deadline = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    + timeout.unwrap_or(Duration::from_secs(300));
                let headers = [
                    ("content-type", "application/json".to_owned()),
                    ("lambda-runtime-aws-request-id", id),
                    (
                        "lambda-runtime-deadline-ms",
                        deadline.as_millis().to_string(),
                    ),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:eu-west-1:123456789012:function:pgkeep-test".to_owned(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000".to_owned(),
                    ),
                ];
                respond(
                    &mut writer,
                    "200 OK",
                    &headers,
                    event.to_string().as_bytes(),
                )?;
            }
            ("POST", "/init/error") => {
                lock.lock().unwrap().init_error = Some(body());
                cond.notify_all();
                respond(&mut writer, "202 Accepted", &[], b"{}")?;
            }
            ("POST", path) => {
                let answer = match path.strip_prefix("/invocation/") {
                    Some(tail) => match tail.rsplit_once('/') {
                        Some((id, "response")) => Some((id.to_owned(), Answer::Response(body()))),
                        Some((id, "error")) => Some((id.to_owned(), Answer::Error(body()))),
                        _ => None,
                    },
                    None => None,
                };
                match answer {
                    Some(answer) => {
                        lock.lock().unwrap().answers.push(answer);
                        cond.notify_all();
                        respond(&mut writer, "202 Accepted", &[], b"{}")?;
                    }
                    None => respond(&mut writer, "404 Not Found", &[], b"{}")?,
                }
            }
            _ => respond(&mut writer, "404 Not Found", &[], b"{}")?,
        }
    }
    Ok(())
}
