"""The clinical record of one patient: the centre, the true row drawn from invented population shares, and the row
as recorded, with values blanked completely at random."""

from __future__ import annotations

from typing import Any

import numpy as np

from hecktor.tasks import CLINICAL_COLUMNS

# (centre name, CenterID, share of patients). Names follow the HECKTOR centres; the shares are invented.
CENTRES = (
    ("CHUM", 1, 0.15),
    ("CHUP", 2, 0.10),
    ("CHUS", 3, 0.10),
    ("HGJ", 4, 0.15),
    ("MDA", 5, 0.35),
    ("USZ", 6, 0.15),
)

# Probability that a recorded clinical value is blanked (missing completely at random).
MISSING_RATES = {
    "Age": 0.02,
    "Tobacco Consumption": 0.35,
    "Alcohol Consumption": 0.38,
    "Performance Status": 0.10,
    "HPV Status": 0.25,
}

# Shares of performance status 0-4, of smokers and of the M-stages; the true models (hecktor.synthetic.outcomes)
# standardise their covariates by the moments of these draws.
_PS_PROBS = (0.50, 0.35, 0.10, 0.04, 0.01)
_P_TOBACCO = 0.55
_M_STAGE_PROBS = (("M0", 0.93), ("M1", 0.03), ("Mx", 0.04))


def _draw_clinical(rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
    names = [c[0] for c in CENTRES]
    shares = np.array([c[2] for c in CENTRES])
    centre = names[int(rng.choice(len(names), p=shares / shares.sum()))]
    centre_id = dict((c[0], c[1]) for c in CENTRES)[centre]
    age = int(round(float(np.clip(rng.normal(62.0, 9.5), 30, 90))))
    gender = int(rng.random() < 0.82)
    tobacco = int(rng.random() < _P_TOBACCO)
    alcohol = int(rng.random() < (0.65 if tobacco else 0.30))
    # The uniform that decides HPV status once the anatomy is drawn (hpv_status): drawn here, where version 1 of the
    # generator drew HPV status, so that every later draw, and so every image, is as in version 1.
    hpv_uniform = float(rng.random())
    ps = int(rng.choice(len(_PS_PROBS), p=_PS_PROBS))
    treatment = int(rng.random() < (0.75 if ps < 2 else 0.40))
    m_stage = _M_STAGE_PROBS[int(rng.choice(len(_M_STAGE_PROBS), p=[p for _, p in _M_STAGE_PROBS]))][0]
    return centre, {
        "CenterID": centre_id,
        "Age": age,
        "Gender": gender,
        "Tobacco Consumption": tobacco,
        "Alcohol Consumption": alcohol,
        "Performance Status": ps,
        "Treatment": treatment,
        "M-stage": m_stage,
        "HPV Status": hpv_uniform,  # replaced by the status in make_case
    }


def _mask_missing(rng: np.random.Generator, true_clinical: dict[str, Any]) -> dict[str, Any]:
    recorded = dict(true_clinical)
    for column in CLINICAL_COLUMNS:  # fixed order, one draw per column, so the stream does not depend on values
        u = rng.random()
        if column in MISSING_RATES and u < MISSING_RATES[column]:
            recorded[column] = None
    return recorded

