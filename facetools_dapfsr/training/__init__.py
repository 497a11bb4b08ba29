"""Training pieces shared by the recipes in ``recipes/`` (one module, one job).

- ``arguments``: the options every recipe takes, as a dataclass, and the generated CLI parser;
- ``setup``: the ``Accelerator`` (CPU/gloo without GPU, precision, tracker, DeepSpeed values);
- ``data``: training/validation faces of a run and the sharded, resumable loader;
- ``sampling``: the deterministic sample stream behind that loader;
- ``pairs``: HR faces -> (LR, HR) pairs with the paper's degradation, seeded per sample;
- ``checkpointing``: atomic, resumable checkpoints around ``accelerator.save_state``;
- ``validation``: PSNR/LPIPS on held-out pairs and the LR | output | HR grid;
- ``reporting``: progress bar, metrics (JSONL + TensorBoard), throughput, per-rank summaries;
- ``gan``: StyleGAN2 objectives (logistic loss, R1, path length, EMA) for the decoder recipe;
- ``native_decoder``: the decoder folder the decoder recipe writes and the encoder recipe reads.
"""
