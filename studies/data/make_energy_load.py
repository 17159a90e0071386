"""Write energy-load.csv: a synthetic daily electricity load series, made here, nothing downloaded.

Three years of days (2021-01-01 .. 2023-12-31, 1095 rows) of a made-up town:

- temperature_c: a yearly cycle (coldest mid-January, -2 to 24 degrees C) plus weather noise
  that persists for a few days (AR(1));
- is_weekend: 1 on Saturdays and Sundays;
- load_mwh: a slow upward trend, heating below 15 degrees C and cooling above 21 degrees C, 18%
  less on weekends, a dip over the year-end holidays, and noise.

The forecasting task (studies/energy-load.yaml): tomorrow's load_mwh from the past days of all
three columns. Run `python studies/data/make_energy_load.py` to write the file again; the seed is
fixed, so the bytes are the same.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("energy-load.csv")


def main() -> None:
    rng = np.random.default_rng(20240601)
    start = dt.date(2021, 1, 1)
    days = [start + dt.timedelta(days=i) for i in range((dt.date(2023, 12, 31) - start).days + 1)]
    n = len(days)
    day_of_year = np.array([d.timetuple().tm_yday for d in days])
    weather = np.zeros(n)
    for i in range(1, n):  # AR(1): a warm spell lasts a few days
        weather[i] = 0.7 * weather[i - 1] + rng.normal(0.0, 1.6)
    temperature = 11.0 - 13.0 * np.cos(2 * np.pi * (day_of_year - 15) / 365.25) + weather
    weekend = np.array([d.weekday() >= 5 for d in days], dtype=int)
    holidays = np.array([(d.month == 12 and d.day >= 24) or (d.month == 1 and d.day <= 2) for d in days])
    trend = 100.0 + 4.0 * np.arange(n) / 365.25
    heating = 2.6 * np.clip(15.0 - temperature, 0.0, None)
    cooling = 3.4 * np.clip(temperature - 21.0, 0.0, None)
    load = (trend + heating + cooling) * np.where(weekend == 1, 0.82, 1.0) * np.where(holidays, 0.88, 1.0)
    load = load + rng.normal(0.0, 2.5, size=n)
    with OUT.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["date", "temperature_c", "is_weekend", "load_mwh"])
        for day, t, w, y in zip(days, temperature, weekend, load):
            writer.writerow([day.isoformat(), f"{t:.1f}", int(w), f"{y:.2f}"])
    print(f"wrote {OUT} ({n} rows)")


if __name__ == "__main__":
    main()
