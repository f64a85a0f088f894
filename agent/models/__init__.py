"""Model families: what differs between them (a profile each), and what they share (pyautogui code)."""
