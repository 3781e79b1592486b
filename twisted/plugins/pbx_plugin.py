"""The `twistd pbx` plugin: one declaration; discovery never imports the application."""

from twisted.application.service import ServiceMaker

pbx = ServiceMaker("Cloud PBX", "pbx.tap", "SIP registrar, B2BUA, trunks, voicemail and IVR.", "pbx")
