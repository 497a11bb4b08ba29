"""Does DAMMAConfig.grey_targets keep a grey domain grey? One Yale B exemplar, 16 faces of other subjects, 30 steps each way:

python benchmarks/damma_grey.py 30
"""

import sys
import time

import torch

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.adaptation.damma import DAMMAConfig, run_damma
from facetools_dapfsr.evaluation.protocol import Domain, FaceStore, ProtocolConfig
from facetools_dapfsr.metrics.image import psnr

torch.set_num_threads(1)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
domain = Domain.from_folder("../shared/data/yaleb")
store = FaceStore(domain, 128, 16, ProtocolConfig(splits=1, draws=1))
ex = [i for i, it in enumerate(domain.images) if "yaleB05_P00A+035E+15" in it.path][0]
subjects = {}
for i, it in enumerate(domain.images):
    if it.identity != domain.images[ex].identity and "A+035E+15" in it.path:
        subjects.setdefault(it.identity, i)
idx = list(subjects.values())[:16]
hr, valid, lr = store.batch(idx)
ex_hr, _, ex_lr = store.batch([ex])
model = DAPFSR.default().eval()


def chroma(x):
    return (x - x.mean(1, keepdim=True)).abs().mean().item()


with torch.no_grad():
    raw = model.upscale(lr, consistency=False)
    cons = model.upscale(lr)
print(
    "source-only raw chroma",
    round(chroma(raw), 4),
    "psnr",
    psnr(raw, hr, mask=valid, grey=True).mean().item(),
    "| consistent chroma",
    round(chroma(cons), 4),
    "psnr",
    psnr(cons, hr, mask=valid, grey=True).mean().item(),
    flush=True,
)
for grey in (False, True):
    t = time.perf_counter()
    res = run_damma(model, ex_hr, ex_lr, DAMMAConfig(max_steps=steps, tolerance=-1, grey_targets=grey), progress=False)
    name = model.add_adapter(res.adapter, "g")
    with torch.no_grad():
        raw = model.upscale(lr, consistency=False)
        cons = model.upscale(lr)
    model.delete_adapter(name)
    print(
        f"grey_targets={grey} {time.perf_counter() - t:.0f}s raw chroma {chroma(raw):.4f} psnr {psnr(raw, hr, mask=valid, grey=True).mean().item():.2f}"
        f" | consistent chroma {chroma(cons):.4f} psnr {psnr(cons, hr, mask=valid, grey=True).mean().item():.2f}",
        flush=True,
    )
