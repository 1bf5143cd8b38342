"""Nightly training from feedback: the feedback store's datasets -> a LoRA adapter -> the evaluation gate -> promotion.

One short script per stage (`sft`, `reward`, `rl`, `dpo`, `kto`; each also runs as `python -m training.<stage>` or
under `accelerate launch`), `data` (checks and splits), `gate`, `registry` (versions and runs under the data dir),
`nightly` (the job) and `recipes/` (a TOML recipe per stage). torch, trl and peft are imported inside the functions
that train, so importing this package is cheap.
"""

__all__: list[str] = []
