"""The page `panel serve app/dashboard.py` serves at /dashboard.

    panel serve app/dashboard.py [--basic-auth users.json | --oauth-provider NAME] [--cookie-secret S]
        [--ssl-certfile F --ssl-keyfile F] [--address A --allow-websocket-origin HOST:PORT]
        [--plugins rdzv.ui.metrics_route]
        --args --endpoint HOST:PORT[,HOST:PORT] [--run-id ID] [--prefix P]
        [--api v2|v3] [--protocol https --ca-cert F --ssl-cert F --ssl-cert-key F] [--timeout S]
        [--nnodes MIN:MAX] [--rdzv-conf KEY=VALUE,...] [--allow-writes] [--writers NAME,...]
        [--audit-log FILE] [--insecure-no-sign-in]

Sign-in, HTTPS and websocket origins are panel serve's own flags (before --args); who may write
and the audit log are the page's (after --args). Every page setting may also come from its RDZV_*
variable (rdzv.options.ENVIRONMENT and SERVING_ENVIRONMENT; arguments win). Without an endpoint
the page shows a demo. The metrics_route plugin adds Prometheus metrics at /metrics, behind the
same sign-in (rdzv.ui.metrics_route). Without sign-in, visitors from other machines get one sentence instead of
the page (unless --insecure-no-sign-in), and never the close-run action.
"""

import sys

from rdzv.ui.launch import TITLE, page

page(sys.argv[1:]).servable(title=TITLE)
