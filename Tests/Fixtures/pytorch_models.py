"""PyTorch models as users save them, for the pack and export tests.

usage: pytorch_models.py tied DIR
         a tiny language-model head whose output layer shares the
         embedding's weight (lm_head.weight = embed.weight), saved the
         documented way (each tensor cloned), as DIR/tied.safetensors
       pytorch_models.py tied-load FILE
         loads FILE into that model with load_state_dict(strict=True) and
         checks that the two weights are still one tensor, equal to FILE's
       pytorch_models.py bf16 DIR
         DIR/bf16.safetensors: a model pinned in bfloat16 with an int64
         counter; DIR/f32.safetensors: the same weights in float32, as a
         PyTorch run in full precision leaves them; DIR/int-as-float.safetensors:
         the counter saved as float32
       pytorch_models.py torch-save DIR
         DIR/model.pt (torch.save's zip) and DIR/legacy.pt (the legacy pickle)
"""
import sys

import torch
from safetensors.torch import load_file, save_file


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(12, 4)
        self.lm_head = torch.nn.Linear(4, 12, bias=False)
        self.lm_head.weight = self.embed.weight


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    if cmd == "tied":
        m = Tied()
        # save_file refuses tensors that share memory; cloning each one
        # writes both names, which load_state_dict(strict=True) expects.
        save_file({k: v.detach().clone().contiguous() for k, v in m.state_dict().items()}, f"{path}/tied.safetensors")
    elif cmd == "tied-load":
        m = Tied()
        state = load_file(path)
        m.load_state_dict(state, strict=True)
        assert m.lm_head.weight is m.embed.weight, "the weights are no longer tied"
        assert torch.equal(m.embed.weight.detach(), state["embed.weight"]), "embed.weight differs from the file"
        assert torch.equal(state["embed.weight"], state["lm_head.weight"]), "the two copies differ"
        print("tied ok")
    elif cmd == "bf16":
        w = {"layer.weight": torch.randn(8, 4), "layer.bias": torch.randn(8), "steps": torch.tensor(3)}
        save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in w.items()},
                  f"{path}/bf16.safetensors")
        trained = {k: (v + 0.01 if v.is_floating_point() else v + 1) for k, v in w.items()}
        save_file(trained, f"{path}/f32.safetensors")
        save_file({**trained, "steps": trained["steps"].float()}, f"{path}/int-as-float.safetensors")
        # What pack must produce: PyTorch's own rounding to bfloat16.
        save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in trained.items()},
                  f"{path}/expected-bf16.safetensors")
    elif cmd == "torch-save":
        m = torch.nn.Linear(4, 2)
        torch.save(m.state_dict(), f"{path}/model.pt")
        torch.save(m.state_dict(), f"{path}/legacy.pt", _use_new_zipfile_serialization=False)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
