"""kaito-aks: settings -> plan -> resources -> outputs. Every decision is made in infra/ (see
`python -m infra plan`)."""
import pulumi

from components.platform import KaitoPlatform, KaitoPlatformArgs, StackSecrets
from infra.errors import UserError
from infra.plan import build_plan
from infra.settings import load_from_pulumi

try:
    plan = build_plan(load_from_pulumi())
except UserError as err:  # one line per problem, no traceback
    raise pulumi.RunError("invalid kaito-aks settings:\n  " + "\n  ".join(err.lines)) from None

config = pulumi.Config()
secrets = StackSecrets(hf_token=config.get_secret("hfToken"), api_keys=config.get_secret("apiKeys"),
                       alert_webhook_url=config.get_secret("alertWebhookUrl"))
platform = KaitoPlatform("kaito", KaitoPlatformArgs(plan, secrets))
for key, value in platform.exports().items():
    pulumi.export(key, value)
