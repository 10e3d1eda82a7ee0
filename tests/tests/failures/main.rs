//! Crashes, timeouts, retries and unsafe output, each provoked against the real binaries: what
//! happens after a failure is as much the product as the backup itself.
//!
//! | provoked | now | where |
//! |---|---|---|
//! | `kill -9`, SIGTERM, SIGINT of a backup | the record says failed, the lease is free, the next backup runs at once | [`runs`] |
//! | the final catalog write fails | the next reaper pass settles the record from the object and manifest | [`runs`] |
//! | a killed local backup, S3 gone mid-upload so that the abort also fails (a cut TCP proxy in front of moto), a killed `restore --jobs` | the orphan sweep removes the partial object, open upload and staged file | [`runs`] |
//! | a run on another host whose heartbeat stops (DynamoDB) | refused within the heartbeat timeout, the next backup runs as soon as it passed | [`runs`] |
//! | a dump longer than the abandon-after | its heartbeat keeps the lease; it is not reaped | [`runs`] |
//! | the same event delivered twice, then again after a failure | one backup; then a second attempt | [`retries`] |
//! | an accepted API backup that cannot start | a `failed` record with the reason, and an alert | [`retries`] |
//! | "newest verified", a stale database | one definition (by start); staleness noticed within the hour | [`retries`] |
//! | a database that only ever had failed backups (a typo) | `pgkeep forget` dismisses it from `status`; refused for one with a real backup | [`forget`] |
//! | `cat -o` onto a symlink, a device, a pre-created temporary name | nothing replaced, nothing readable by others | [`output`] |
//! | ambiguous JWT groups claims | refused (403), exact matches allowed | [`output`] |

mod forget;
mod output;
mod retries;
mod runs;
