//! Trying an operation again, a few times with a pause between tries: for publishes whose
//! message id makes a repeat harmless, so a blip of the server does not fail them.

use std::future::Future;
use std::time::Duration;

/// How many tries an operation gets, and the pause between two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    tries: u32,
    pause: Duration,
}

impl Schedule {
    pub const fn new(tries: u32, pause: Duration) -> Schedule {
        Schedule { tries, pause }
    }

    /// Runs `op` until it succeeds or the tries are spent (at least one); the last error then.
    pub async fn run<T, E, F, Fut>(self, mut op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut result = op().await;
        for _ in 1..self.tries {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(self.pause).await;
            result = op().await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_operation_gets_its_tries_and_no_more() {
        let schedule = Schedule::new(3, Duration::from_millis(1));
        let mut calls = 0;
        let failing: Result<(), u32> = schedule
            .run(|| {
                calls += 1;
                std::future::ready(Err(calls))
            })
            .await;
        assert_eq!(failing, Err(3), "the last error, after three tries");
        let mut calls = 0;
        let second: Result<u32, ()> = schedule
            .run(|| {
                calls += 1;
                std::future::ready(if calls == 2 { Ok(calls) } else { Err(()) })
            })
            .await;
        assert_eq!(second, Ok(2), "stops at the first success");
    }
}
