"""Settings shared by the suites (full run vs --quick smoke run)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Config:
    quick: bool = False
    full: bool = False  # every variant of every family, not one per family
    threads: int = 1  # torch intra-op threads: 1 keeps figures stable on a shared machine
    clock: str = "cpu"  # in-process suites: process CPU time ("wall" for elapsed time)
    specs: list[str] | None = None  # restrict the model suites to these spec names
    train_batch: int = 2
    train_size: int = 160  # 224 triples the suite's time on 2 cores; the ratio is what counts
    train_budget: float = 30.0  # seconds of measuring per model (5 to 15 rounds)
    notes: list[str] = field(default_factory=list)

    def models(self, default: list[str] | None = None) -> list[str]:
        """The suite's models: --specs when given, else the suite's own list, else one variant
        of every shipped family (every variant with --full)."""
        if self.specs is not None:
            return list(self.specs)
        if default is not None:
            return default
        from benchmarks.models import family_models

        return family_models(self.full)

    def rounds(self, full: int, quick: int = 2) -> int:
        return quick if self.quick else full
