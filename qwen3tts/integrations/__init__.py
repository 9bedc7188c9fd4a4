"""Integrations with voice-agent frameworks, each an optional extra: `pipecat` (Pipecat TTS
service) and `livekit` (LiveKit Agents TTS), both clients of a running qwen3tts server."""
