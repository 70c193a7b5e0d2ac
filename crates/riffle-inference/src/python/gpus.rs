//! Which GPUs each Python worker sees (its `CUDA_VISIBLE_DEVICES`).
//!
//! The inventory is `RIFFLE_GPUS` (ids, comma-separated: also how tests give a machine
//! without GPUs some), else the engine's own `CUDA_VISIBLE_DEVICES`, else none. A worker
//! asking for a fraction `f` of a GPU shares one with `floor(1 / f) - 1` others; asking for
//! `n` whole GPUs, it gets `n` of its own. Asking for more than there are is an error when
//! the job is planned, not a hang.

use riffle_common::{Result, RiffleError};

/// The GPU ids this process may hand out.
pub fn inventory() -> Vec<String> {
    let from = |name: &str| {
        std::env::var(name).ok().map(|ids| {
            ids.split(',')
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
                .collect::<Vec<_>>()
        })
    };
    from("RIFFLE_GPUS")
        .or_else(|| from("CUDA_VISIBLE_DEVICES"))
        .unwrap_or_default()
}

/// The GPU ids of each of `workers` workers asking for `per_worker` GPUs each, dealt from
/// `inventory`; empty lists when `per_worker` is 0.
pub fn assign(
    function: &str,
    inventory: &[String],
    workers: usize,
    per_worker: f64,
) -> Result<Vec<Vec<String>>> {
    if per_worker == 0.0 {
        return Ok(vec![Vec::new(); workers]);
    }
    let refuse = |needed: String| {
        RiffleError::user(format!(
            "{function}: {workers} workers with num_gpus={per_worker} need {needed}, and this \
             machine has {} ({})",
            inventory.len(),
            if inventory.is_empty() {
                "none".to_string()
            } else {
                inventory.join(", ")
            }
        ))
        .with_hint("lower concurrency or num_gpus; RIFFLE_GPUS=0,1 names the GPUs to use")
    };
    if per_worker.is_nan() || per_worker < 0.0 || (per_worker > 1.0 && per_worker.fract() != 0.0) {
        return Err(RiffleError::user(format!(
            "{function}: num_gpus must be a fraction up to 1 or a whole number, not {per_worker}"
        )));
    }
    if per_worker <= 1.0 {
        let sharing = (1.0 / per_worker).floor().max(1.0) as usize;
        let needed = workers.div_ceil(sharing);
        if needed > inventory.len() {
            return Err(refuse(format!("{needed} GPUs")));
        }
        return Ok((0..workers)
            .map(|worker| vec![inventory[worker / sharing].clone()])
            .collect());
    }
    let each = per_worker as usize;
    if each * workers > inventory.len() {
        return Err(refuse(format!("{} GPUs", each * workers)));
    }
    Ok((0..workers)
        .map(|worker| inventory[worker * each..(worker + 1) * each].to_vec())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn fractions_pack_workers_onto_gpus() {
        let got = assign("f", &ids(2), 4, 0.5).unwrap();
        assert_eq!(got, vec![vec!["0"], vec!["0"], vec!["1"], vec!["1"]]);
        let got = assign("f", &ids(2), 3, 0.3).unwrap();
        assert_eq!(got, vec![vec!["0"], vec!["0"], vec!["0"]]);
    }

    #[test]
    fn whole_gpus_are_each_workers_own() {
        let got = assign("f", &ids(4), 2, 2.0).unwrap();
        assert_eq!(got, vec![vec!["0", "1"], vec!["2", "3"]]);
        assert_eq!(
            assign("f", &[], 3, 0.0).unwrap(),
            vec![Vec::<String>::new(); 3]
        );
    }

    #[test]
    fn asking_for_more_than_there_is_an_error() {
        let error = assign("map_batches(M)", &ids(1), 3, 0.5).unwrap_err();
        assert!(error.to_string().contains("need 2 GPUs"), "{error}");
        assert!(assign("f", &ids(4), 1, 1.5).is_err());
        assert!(assign("f", &ids(4), 1, -1.0).is_err());
    }
}
