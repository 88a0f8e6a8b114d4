"""Say when the train data wraps around: from then on, every step trains on tokens seen before.

The loaders (data/loader.py, data/bos.py) read their shards as one endless cyclic stream and count
the wraps in `loader.epoch`. A run longer than the data silently repeats it otherwise; a repeat
changes what a val-loss curve means (memorization), so it is printed once on the console and
recorded at every wrap in metrics.jsonl:

    {"event": "epoch", "step": 11, "tokens": 45056, "epoch": 1, "tokens_per_epoch": 43008}

`step` is the optimizer step during which the wrap happened (steps done after it), `epoch` the
number of completed passes, `tokens_per_epoch` the train tokens in data.dir.
"""
from __future__ import annotations


class EpochWatch:
    def __init__(self, loader, tokens_per_step: int, is_main: bool):
        self.loader, self.tokens_per_step, self.is_main = loader, tokens_per_step, is_main
        self.epoch, self.said = loader.epoch, False  # a resumed run starts at its checkpoint's epoch

    def check(self, step: int, log) -> None:
        """Call after each optimizer step (`step` = steps done); logs an event when the data wrapped."""
        if self.loader.epoch == self.epoch:
            return
        self.epoch = self.loader.epoch
        per_epoch = sum(self.loader.cache.sizes)
        log.log({"event": "epoch", "step": step, "tokens": step * self.tokens_per_step, "epoch": self.epoch,
                 "tokens_per_epoch": per_epoch})
        if self.is_main and not self.said:
            self.said = True
            print(f"note: the train data wrapped around during step {step}: its {per_epoch:,} tokens "
                  f"({per_epoch / self.tokens_per_step:.1f} steps) are repeated from here on (epoch "
                  f"{self.epoch + 1}); add train shards to data.dir for more", flush=True)
