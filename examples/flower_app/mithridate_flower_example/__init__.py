"""A Flower app on digits defended by mithridate's robust aggregation."""
