"""The runtime: the driver loop (:mod:`tasks.driver`), Ray actors (:mod:`tasks.runtime`) in an elastic pool
(:mod:`tasks.actor_pool`) and thin Prefect tasks (:mod:`tasks.prefect_tasks`). Import the Ray and Prefect modules
only when they are needed."""
