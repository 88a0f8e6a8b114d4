"""hydra/launcher=slurm without a cluster: the submitit plugin's own launch() writes a valid sbatch script."""
from tests.conftest import REPO


def test_slurm_launcher_produces_a_valid_sbatch_script(tmp_path, monkeypatch):
    """The plugin's own launch() with submitit's SLURM executor, stopped just before `sbatch`."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    from harness.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           f"hydra.sweep.dir={tmp_path}/sweep", "hydra.job.name=train"],
                      return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    launcher = SlurmLauncher(**params)
    launcher.config = cfg
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is installed"
    submitted = {}
    monkeypatch.setattr(submitit.AutoExecutor, "map_array",
                        lambda self, fn, *args: submitted.update(executor=self, jobs=list(zip(*args))) or [])
    launcher.launch([["optim.lr=0.001"], ["optim.lr=0.003"]], initial_job_idx=0)
    assert len(submitted["jobs"]) == 2
    script = submitted["executor"]._executor._make_submission_file_text("python -u -m submitit.core._submit DIR", "x")
    for line in ("#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", "#SBATCH --nodes=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --partition=gpu", "#SBATCH --time=120",
                 "#SBATCH --job-name=train"):
        assert line in script, script
    assert "srun" in script and "submitit.core._submit" in script
