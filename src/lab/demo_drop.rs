//! The demo's drop folder: one document dropped into the inbox at the start, submitted to the
//! extract.page sandbox, and its result awaited in the outbox while the demo's passes run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::daemon::Mirror;
use crate::error::Error;
use crate::scheduler::PassTrigger;

/// The dropped document's name.
const SAMPLE: &str = "invoice-demo.pdf";

/// A dropped document on its way back: where its result will land and since when it is awaited.
pub struct DemoDrop {
    result: PathBuf,
    dropped: Instant,
    pub trigger: Arc<PassTrigger>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
    stop: CancellationToken,
    pub arrived: Option<Duration>,
}

/// Moves the demo's drop folder under `root/drop`.
pub fn rebase(settings: &mut Settings, root: &Path) {
    if let Some(d) = settings.dropfolder.as_mut() {
        let base = root.join("drop");
        d.inbox = base.join("inbox");
        d.done = base.join("done");
        d.failed = base.join("failed");
        d.outbox = base.join("outbox");
    }
}

impl DemoDrop {
    /// Drops the sample document and starts the worker (None when the demo config has no
    /// `[dropfolder]`).
    pub fn start(mirror: &Mirror, cancel: &CancellationToken) -> Result<Option<Self>, Error> {
        let Some(d) = mirror.settings().dropfolder.clone() else {
            return Ok(None);
        };
        let io = |source| Error::Local {
            action: "demo: cannot write the sample document into",
            path: d.inbox.clone(),
            hint: "check the demo directory's permissions",
            source,
        };
        std::fs::create_dir_all(&d.inbox).map_err(io)?;
        let text: String = (1..=40)
            .map(|i| format!("Invoice line {i}: 1 × widget at {i}.00 EUR\n"))
            .collect();
        std::fs::write(d.inbox.join(SAMPLE), text).map_err(io)?;
        println!(
            "dropped {} into {}: it is submitted to the extract.page sandbox as a new job",
            SAMPLE,
            d.inbox.display()
        );
        let trigger = Arc::new(PassTrigger::default());
        let stop = cancel.child_token();
        let Some(worker) = mirror.dropfolder(trigger.clone()) else {
            return Ok(None);
        };
        let task = tokio::spawn(worker.run(stop.clone()));
        Ok(Some(Self {
            result: d.outbox.join(format!("{SAMPLE}.json")),
            dropped: Instant::now(),
            trigger,
            task,
            stop,
            arrived: None,
        }))
    }

    /// True once the result is in the outbox (noting how long it took).
    pub fn check(&mut self) -> bool {
        if self.arrived.is_none() && self.result.exists() {
            let took = self.dropped.elapsed();
            self.arrived = Some(took);
            println!(
                "drop folder: {SAMPLE} → {} in {:.1}s",
                self.result.display(),
                took.as_secs_f64()
            );
        }
        self.arrived.is_some()
    }

    /// Stops the worker.
    pub async fn finish(self) -> Result<(), Error> {
        self.stop.cancel();
        match self.task.await {
            Ok(r) => r,
            Err(source) => Err(Error::Task {
                task: "demo drop folder",
                source,
            }),
        }
    }
}
