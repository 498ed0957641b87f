"""The page `panel serve app/dashboard.py` serves at /dashboard.

    panel serve app/dashboard.py --args --endpoint HOST:PORT[,HOST:PORT] [--run-id ID] [--prefix P]
        [--api v2|v3] [--protocol https --ca-cert F --ssl-cert F --ssl-cert-key F] [--allow-writes]

The same settings may come from RDZV_ENDPOINT, RDZV_RUN_ID, RDZV_PREFIX, RDZV_API, RDZV_PROTOCOL,
RDZV_CA_CERT, RDZV_SSL_CERT and RDZV_SSL_CERT_KEY. Without an endpoint the page shows a demo.
"""

import sys

from rdzv.ui.launch import TITLE, page

page(sys.argv[1:]).servable(title=TITLE)
