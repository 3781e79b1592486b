"""Call applications: what the PBX does with a call when it is the media end itself (IVR menus, prompts,
recordings; later voicemail). They use the B2BUA's calls through a narrow protocol (`pbx.apps.base.AppCall`)
and the media layer's endpoints, and are plugged into the action runner by `pbx/tap.py`.
"""

from pbx.apps.base import AppCall, MediaFormat, media_format
from pbx.apps.ivr import DEFAULTS, IvrApps
from pbx.apps.moh import MusicOnHold

__all__ = ["DEFAULTS", "AppCall", "IvrApps", "MediaFormat", "MusicOnHold", "media_format"]
