"""The runtime: the driver loop (:mod:`tasks.driver`), Ray actors (:mod:`tasks.runtime`, pool :mod:`tasks.actor_pool`) and thin Prefect
tasks (:mod:`tasks.prefect_tasks`). Import the Ray and Prefect modules only when they are needed."""
