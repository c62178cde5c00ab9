//! The statuses of runs, steps, attempts and items: stored as lower-case
//! words, matched on as enums.

/// An enum stored as one of a fixed set of words: `as_str` for writing,
/// `parse` for reading (a word outside the set is
/// [`DbError::Corrupt`](super::DbError::Corrupt)).
macro_rules! stored_words {
    ($(#[$doc:meta])* $name:ident, $what:literal {
        $($(#[$vdoc:meta])* $variant:ident => $word:literal,)+
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of the enum.
            pub const ALL: &[Self] = &[$(Self::$variant,)+];

            /// The word stored for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }

            /// The value stored as `word`.
            pub fn parse(word: &str) -> Result<Self, $crate::db::DbError> {
                match word {
                    $($word => Ok(Self::$variant),)+
                    other => Err($crate::db::DbError::Corrupt(format!(concat!($what, " {:?}"), other))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(super) use stored_words;

stored_words! {
    /// Where a run is in its life.
    RunStatus, "run status" {
        /// Started and not yet claimed (or queued behind its workflow's
        /// concurrency limit).
        Pending => "pending",
        /// A step has been claimed.
        Running => "running",
        /// Waiting for a person or a system (a step is `paused`), with
        /// nothing else to do.
        Paused => "paused",
        Completed => "completed",
        Failed => "failed",
        /// Cancelled by a caller: unstarted steps cancelled, running ones
        /// finish.
        Cancelled => "cancelled",
        /// Stopped by a caller or its deadline: running steps interrupted.
        Terminated => "terminated",
        /// A person declined an approval the run waited for.
        Declined => "declined",
    }
}

impl RunStatus {
    /// Whether the run has ended: nothing of it will run again unless a
    /// caller resumes it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Terminated | Self::Declined
        )
    }
}

stored_words! {
    /// Where a step of a run stands.
    StepStatus, "step status" {
        /// Waiting for its dependencies.
        Pending => "pending",
        /// Due to be claimed at its `due_at`.
        Ready => "ready",
        /// Claimed under a lease: an attempt is under way.
        Running => "running",
        /// Ready, but its run is paused by an operator.
        Held => "held",
        /// Waiting for a person or a system (a task, an outside signal).
        Paused => "paused",
        Completed => "completed",
        /// Its `if` was false, or a dependency was skipped.
        Skipped => "skipped",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl StepStatus {
    /// Whether the step has ended (for good, unless its run is resumed).
    pub fn is_done(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Skipped | Self::Failed | Self::Cancelled
        )
    }

    /// Whether the step has not started: a cancel cancels it.
    pub fn is_unstarted(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Ready | Self::Held | Self::Paused
        )
    }

    /// Whether the step lets its dependents go on: completed or skipped.
    pub fn lets_dependents_run(self) -> bool {
        matches!(self, Self::Completed | Self::Skipped)
    }
}

stored_words! {
    /// How an attempt at a step stands or ended.
    AttemptStatus, "attempt status" {
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        /// Stopped from outside (terminate, the run's deadline, a lost
        /// lease, a host that stopped).
        Interrupted => "interrupted",
        /// Not run: its rate limit's minute was full. Does not count.
        RateLimited => "rate_limited",
        /// A `for_each` step whose run was paused, with items left. Does
        /// not count.
        Held => "held",
    }
}

stored_words! {
    /// Where an item of a `for_each` step stands.
    ItemStatus, "item status" {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_written_and_a_stranger_is_corrupt() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()).unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()).unwrap(), *s);
        }
        for s in AttemptStatus::ALL {
            assert_eq!(AttemptStatus::parse(s.as_str()).unwrap(), *s);
        }
        for s in ItemStatus::ALL {
            assert_eq!(ItemStatus::parse(s.as_str()).unwrap(), *s);
        }
        let e = StepStatus::parse("done").unwrap_err().to_string();
        assert!(e.contains("step status \"done\""), "{e}");
    }
}
