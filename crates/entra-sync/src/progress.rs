//! What a person watching a run sees on the terminal: a progress bar while it reads and applies
//! (on stderr, hidden when stderr is not a terminal) and one summary line when it ends.

use indicatif::{ProgressBar, ProgressStyle};

use crate::sync::{ProgressEvent, RunSummary};

/// A progress bar for one run.
pub struct RunProgress {
    bar: ProgressBar,
}

impl Default for RunProgress {
    fn default() -> Self {
        RunProgress::new()
    }
}

impl RunProgress {
    /// A spinner on stderr that turns into a bar once the plan's size is known.
    pub fn new() -> RunProgress {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        RunProgress { bar }
    }

    /// Shows one progress event.
    pub fn report(&self, event: ProgressEvent) {
        match event {
            ProgressEvent::Fetched { users, groups, pages } => {
                self.bar.set_message(format!(
                    "reading Entra: {users} users, {groups} groups ({pages} pages)"
                ));
            }
            ProgressEvent::Planned { actions } => {
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} applying {pos}/{len} actions [{bar:30}] {eta} left",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                self.bar.set_length(actions);
                self.bar.set_position(0);
            }
            ProgressEvent::Applied { done, .. } => self.bar.set_position(done),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// One line that says how a run went.
pub fn summary_line(summary: &RunSummary) -> String {
    let counts = &summary.counts;
    let mut line = format!(
        "run {} {}: {} {}, {} created, {} updated, {} disabled, {} restored, {} unchanged, {} conflicts; groups +{} ~{} -{}; memberships +{} -{}; {} Graph requests in {} ms",
        summary.run_id,
        summary.connection,
        summary.mode,
        summary.status,
        counts.created,
        counts.updated,
        counts.disabled,
        counts.restored,
        counts.unchanged,
        counts.conflicts,
        counts.groups_created,
        counts.groups_updated,
        counts.groups_deleted,
        counts.memberships_added,
        counts.memberships_removed,
        summary.graph_requests,
        summary.duration_ms,
    );
    if summary.delta_reset {
        line.push_str(" (delta links were reset: full round)");
    }
    if summary.failed_actions > 0 {
        line.push_str(&format!(
            " ({} actions failed; the next run retries them)",
            summary.failed_actions
        ));
    }
    line
}
