//! Readiness as a published value: whoever decides sets it, whoever waits
//! for it subscribes to a `watch` and wakes when it changes — no polling
//! loop, no missed change between a check and a sleep.

use std::time::Duration;

use tokio::sync::watch;

/// Whether something can serve now, and a way to wait until it can.
#[derive(Debug)]
pub struct Ready {
    tx: watch::Sender<bool>,
}

impl Default for Ready {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Ready {
    /// Starts as `ready`.
    pub fn new(ready: bool) -> Self {
        Self {
            tx: watch::Sender::new(ready),
        }
    }

    /// Sets it; waiters wake when it changes.
    pub fn set(&self, ready: bool) {
        self.tx
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Ready now?
    pub fn get(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until ready, at most `timeout`; whether it is.
    pub async fn wait(&self, timeout: Duration) -> bool {
        wait_for(&mut self.tx.subscribe(), timeout, |r| *r).await
    }
}

/// Waits until `rx`'s value passes `pred`, at most `timeout`: whether it
/// did. A closed channel stops the wait (its last value decides).
pub async fn wait_for<T>(
    rx: &mut watch::Receiver<T>,
    timeout: Duration,
    pred: impl FnMut(&T) -> bool,
) -> bool {
    matches!(
        tokio::time::timeout(timeout, rx.wait_for(pred)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_the_change_and_time_out_without_one() {
        let r = std::sync::Arc::new(Ready::default());
        assert!(!r.wait(Duration::from_millis(50)).await);
        let r2 = r.clone();
        let waiter = tokio::spawn(async move { r2.wait(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        r.set(true);
        assert!(waiter.await.unwrap());
        assert!(r.get());
        assert!(r.wait(Duration::ZERO).await);
    }
}
