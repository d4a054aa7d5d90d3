"""quantization: does rounding the weights bring it back?

Definition (views.md, "quantization"): the candidate's checkpoint is loaded again in
INT8 (bitsandbytes LLM.int8, ``load_in_8bit``) and in 4-bit NormalFloat (bitsandbytes
``load_in_4bit`` with ``bnb_4bit_quant_type="nf4"``), each through
:meth:`unlearn_audit.model.Engine.quantized` (``ModelSpec.quantization`` set), and the
novel-recall leak rate is measured on each exactly as novel_recall measures it (every
forget question and, separately, its paraphrase; greedy; the corrected scorer).

- ``quantization.int8_delta_pp``: ``(leak rate in INT8 - leak rate at full precision) * 100``
  over the same (item, question kind) pairs; 95% interval by a cluster bootstrap over
  items of the per-pair change (see :func:`unlearn_audit.views.rtt.delta_metric`).
- ``quantization.nf4_delta_pp``: the same in NF4.

Full precision is the model as the audit loaded it (its engine's cached novel_recall
answers). When bitsandbytes cannot quantize on this machine
(:class:`~unlearn_audit.model.QuantizationUnavailable` or an ``ImportError``), the metric is
``skipped`` with that reason. Per-kind deltas (question only, paraphrase only) are in
``extra["by_kind"]``; ``extra["kernel_path"]`` says which arithmetic the quantized copy
ran (``cpu-dequantize``: NF4 dequantized, then a torch matmul, the same on every CPU;
``cpu-exact-int8-f64-per-token``: LLM.int8 with its int8 matmul exact, every float of the
model in float64, so its rounding steps land alike on every CPU, and each token's outlier
columns its own; ``cuda-bitsandbytes``). bitsandbytes chooses outlier columns over every
row of a pass, so there an int8 answer depends on which rows share its passes (the batch
plan, the padding, which rows a cache already held, ``--limit``); on the CPU each row gets
what bitsandbytes gives it alone, so per-item records do not move with the batch.
Unlearning that only nudges weights within a rounding step comes
undone here (Zhang et al., "Catastrophic Failure of LLM Unlearning via Quantization",
ICLR 2025).

Source: views.md; the seed paper reports -0.03 pp in INT8 at 3B. LLM.int8: Dettmers et
al. (2022); NF4: Dettmers et al., "QLoRA" (2023).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unlearn_audit.views._base import Metric, Skip, View, ViewResult, register_view
from unlearn_audit.views.rtt import delta_metric, leak_rate_of, leak_records, paired_rows

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext

#: Quantization mode -> metric name.
MODES = {"int8": "quantization.int8_delta_pp", "nf4": "quantization.nf4_delta_pp"}


@register_view
class Quantization(View):
    """Leak rate in INT8 and NF4 against full precision."""

    name = "quantization"
    title = "Quantization: does rounding the weights bring it back?"
    metrics = tuple(MODES.values())

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        items = ctx.forget_items()
        if not items:
            return self.skipped(label, "the forget split has no items")
        spec = ctx.spec(label)
        if spec.quantization is not None:
            return self.skipped(label, f"the model is already loaded quantized ({spec.quantization}); "
                                       "audit it at full precision to compare")
        full = leak_records(ctx, ctx.engine(label), items)
        records: list[dict[str, Any]] = [{**r, "precision": "full"} for r in full]
        metrics = []
        for mode, name in MODES.items():
            quant = self._leak_quantized(ctx, label, mode, items)
            if isinstance(quant, str):
                metrics.append(Metric(name, None, reason=quant, skip=Skip.BACKEND_UNAVAILABLE))
                continue
            quant, kernel_path = quant
            m = delta_metric(name, paired_rows(full, quant), seed=ctx.config.seed)
            m.extra.update({"leak_rate_full": leak_rate_of([r["leaked"] for r in full]),
                            f"leak_rate_{mode}": leak_rate_of([r["leaked"] for r in quant]),
                            "kernel_path": kernel_path})
            metrics.append(m)
            records += [{**r, "precision": mode} for r in quant]
        return ViewResult(self.name, label, metrics, records)

    def _leak_quantized(self, ctx: AuditContext, label: str, mode: str,
                        items) -> tuple[list[dict[str, Any]], str | None] | str:
        """Leak records of the model loaded in ``mode`` and the kernel path that computed
        them, or the reason it cannot be loaded."""
        from unlearn_audit.model import QuantizationUnavailable

        engine = ctx.engine(label)
        try:
            quantized = engine.quantized(mode)
        except (QuantizationUnavailable, ImportError) as e:
            return f"{mode} quantization is unavailable here: {e}"
        try:
            # The fingerprint covers the mode and kernel path, so the on-disk cache is safe.
            return leak_records(ctx, quantized, items), quantized.kernel_path
        finally:
            del quantized
            engine.release_memory()
