"""metalab's Hydra sweeper on current Optuna (`hydra/sweeper=optuna`): samplers, pruners, SQLite
or journal-file storage shared by several workers. Hydra finds it in the `hydra_plugins`
namespace package; the Optuna parts are imported only when a search starts."""
